/*
 * bench-restore: microvm_restore() against its floor, the KVM calls a
 * restore cannot avoid, made raw in the same run.
 *
 *   bench-restore [--runs N] [--dir DIR]
 *
 * For 128 MiB and 1 GiB of guest RAM: boot the tiny counter payload, snapshot
 * it, then alternate N times (medians, one process run):
 *  - microvm_restore() of that snapshot, returning with the VM running;
 *  - the floor: open and map the snapshot's memory file privately,
 *    KVM_CREATE_VM, the RAM memslot, TSS/identity map, in-kernel irqchip and
 *    PIT, KVM_CREATE_VCPU and its run mapping, KVM_SET_CPUID2, the vCPU's
 *    state (MP state, regs, sregs, XSAVE, XCRs, debug regs, LAPIC, MSRs,
 *    events) and the VM's (3 irqchips, PIT, kvmclock, TSC offset), each
 *    step timed, with state read once from a template VM.
 * Every VM is torn down untimed, and the bench waits for the kernel's
 * teardown before the next run. Prints the table and what the floor is made
 * of. Without VT-x/AMD-V KVM calls cost what this host's KVM makes them cost
 * (see docs/performance.md); the ratio is what this bench is for.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <microvm.h>

#include "bench.h"

#define MAX_MSRS 512
#define MAX_CPUID 256
#define TSS_ADDR 0xfffbd000UL
#define RUNS_MAX 10000

static void die(const char *what)
{
	fprintf(stderr, "bench-restore: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ------------------------------------------------------------- template */

/* The state the floor sets, read once from a VM made like a restored one. */
struct tmpl {
	int kvm;
	int run_size;
	struct kvm_cpuid2 *cpuid;
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dregs;
	struct kvm_lapic_state lapic;
	struct kvm_msrs *msrs;
	struct kvm_vcpu_events events;
	struct kvm_irqchip chip[3];
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	uint64_t tsc_off;
};

static void xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	if (ioctl(fd, req, arg) < 0)
		die(what);
}

static void tmpl_msrs(struct tmpl *t, int vcpu)
{
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + MAX_MSRS * sizeof(uint32_t));
	t->msrs = calloc(1, sizeof(*t->msrs) + MAX_MSRS * sizeof(struct kvm_msr_entry));
	if (!l || !t->msrs)
		die("calloc");
	l->nmsrs = MAX_MSRS;
	xioctl(t->kvm, KVM_GET_MSR_INDEX_LIST, l, "KVM_GET_MSR_INDEX_LIST");
	/* Keep the MSRs this vCPU reads back (KVM_GET_MSRS stops at the first
	 * it cannot read: skip that one). */
	uint32_t n = 0;
	for (uint32_t i = 0; i < l->nmsrs; i++) {
		struct {
			struct kvm_msrs h;
			struct kvm_msr_entry e;
		} one = { .h.nmsrs = 1, .e.index = l->indices[i] };
		if (ioctl(vcpu, KVM_GET_MSRS, &one) == 1)
			t->msrs->entries[n++] = one.e;
	}
	t->msrs->nmsrs = n;
	free(l);
}

static void tmpl_vcpu(struct tmpl *t, int vcpu)
{
	xioctl(vcpu, KVM_GET_MP_STATE, &t->mp, "KVM_GET_MP_STATE");
	xioctl(vcpu, KVM_GET_REGS, &t->regs, "KVM_GET_REGS");
	xioctl(vcpu, KVM_GET_SREGS, &t->sregs, "KVM_GET_SREGS");
	xioctl(vcpu, KVM_GET_XSAVE, &t->xsave, "KVM_GET_XSAVE");
	xioctl(vcpu, KVM_GET_XCRS, &t->xcrs, "KVM_GET_XCRS");
	xioctl(vcpu, KVM_GET_DEBUGREGS, &t->dregs, "KVM_GET_DEBUGREGS");
	xioctl(vcpu, KVM_GET_LAPIC, &t->lapic, "KVM_GET_LAPIC");
	xioctl(vcpu, KVM_GET_VCPU_EVENTS, &t->events, "KVM_GET_VCPU_EVENTS");
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
				     .addr = (uintptr_t)&t->tsc_off };
	xioctl(vcpu, KVM_GET_DEVICE_ATTR, &a, "KVM_GET_DEVICE_ATTR (TSC offset)");
	tmpl_msrs(t, vcpu);
}

static void tmpl_init(struct tmpl *t)
{
	memset(t, 0, sizeof(*t));
	t->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (t->kvm < 0)
		die("/dev/kvm");
	t->run_size = ioctl(t->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	t->cpuid = calloc(1, sizeof(*t->cpuid) + MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
	if (!t->cpuid)
		die("calloc");
	t->cpuid->nent = MAX_CPUID;
	xioctl(t->kvm, KVM_GET_SUPPORTED_CPUID, t->cpuid, "KVM_GET_SUPPORTED_CPUID");
	int vm = ioctl(t->kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	struct kvm_pit_config pc = { .flags = KVM_PIT_SPEAKER_DUMMY };
	xioctl(vm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP");
	xioctl(vm, KVM_CREATE_PIT2, &pc, "KVM_CREATE_PIT2");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	xioctl(vcpu, KVM_SET_CPUID2, t->cpuid, "KVM_SET_CPUID2");
	tmpl_vcpu(t, vcpu);
	for (uint32_t i = 0; i < 3; i++) {
		t->chip[i].chip_id = i;
		xioctl(vm, KVM_GET_IRQCHIP, &t->chip[i], "KVM_GET_IRQCHIP");
	}
	xioctl(vm, KVM_GET_PIT2, &t->pit, "KVM_GET_PIT2");
	xioctl(vm, KVM_GET_CLOCK, &t->clock, "KVM_GET_CLOCK");
	t->clock.flags = 0;
	close(vcpu);
	close(vm);
}

/* ---------------------------------------------------------------- floor */

enum step { MAP, CREATE_VM, MEMSLOT, VM_INIT, CREATE_VCPU, CPUID, VCPU_STATE, VM_STATE, STEPS };

static const char *const step_names[STEPS] = {
	"open + mmap memory file (private)",
	"KVM_CREATE_VM",
	"KVM_SET_USER_MEMORY_REGION",
	"TSS, identity map, irqchip, PIT2",
	"KVM_CREATE_VCPU + mmap kvm_run",
	"KVM_SET_CPUID2",
	"vCPU state (9 ioctls)",
	"irqchips, PIT, clock, TSC offset",
};

struct floor_vm {
	int mem_fd, vm, vcpu;
	void *mem, *run;
};

static void vcpu_state(const struct tmpl *t, int vcpu)
{
	xioctl(vcpu, KVM_SET_MP_STATE, (void *)&t->mp, "KVM_SET_MP_STATE");
	xioctl(vcpu, KVM_SET_REGS, (void *)&t->regs, "KVM_SET_REGS");
	xioctl(vcpu, KVM_SET_SREGS, (void *)&t->sregs, "KVM_SET_SREGS");
	xioctl(vcpu, KVM_SET_XSAVE, (void *)&t->xsave, "KVM_SET_XSAVE");
	xioctl(vcpu, KVM_SET_XCRS, (void *)&t->xcrs, "KVM_SET_XCRS");
	xioctl(vcpu, KVM_SET_DEBUGREGS, (void *)&t->dregs, "KVM_SET_DEBUGREGS");
	xioctl(vcpu, KVM_SET_LAPIC, (void *)&t->lapic, "KVM_SET_LAPIC");
	if (ioctl(vcpu, KVM_SET_MSRS, t->msrs) != (int)t->msrs->nmsrs)
		die("KVM_SET_MSRS");
	xioctl(vcpu, KVM_SET_VCPU_EVENTS, (void *)&t->events, "KVM_SET_VCPU_EVENTS");
}

static void vm_state(const struct tmpl *t, int vm, int vcpu)
{
	for (int i = 0; i < 3; i++)
		xioctl(vm, KVM_SET_IRQCHIP, (void *)&t->chip[i], "KVM_SET_IRQCHIP");
	xioctl(vm, KVM_SET_PIT2, (void *)&t->pit, "KVM_SET_PIT2");
	xioctl(vm, KVM_SET_CLOCK, (void *)&t->clock, "KVM_SET_CLOCK");
	uint64_t off = t->tsc_off;
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
				     .addr = (uintptr_t)&off };
	xioctl(vcpu, KVM_SET_DEVICE_ATTR, &a, "KVM_SET_DEVICE_ATTR (TSC offset)");
}

/* Step @s of the floor on @f (@mem: the memory file of @size bytes). */
static void floor_step(const struct tmpl *t, struct floor_vm *f, enum step s, const char *mem,
		       uint64_t size)
{
	struct kvm_userspace_memory_region slot = { .slot = 0, .memory_size = size };
	struct kvm_pit_config pc = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = TSS_ADDR + 0x3000;
	switch (s) {
	case MAP:
		f->mem_fd = open(mem, O_RDONLY | O_CLOEXEC);
		f->mem = f->mem_fd < 0 ? MAP_FAILED
				       : mmap(NULL, size, PROT_READ | PROT_WRITE,
					      MAP_PRIVATE | MAP_NORESERVE, f->mem_fd, 0);
		if (f->mem == MAP_FAILED)
			die(mem);
		break;
	case CREATE_VM:
		if ((f->vm = ioctl(t->kvm, KVM_CREATE_VM, 0)) < 0)
			die("KVM_CREATE_VM");
		break;
	case MEMSLOT:
		slot.userspace_addr = (uintptr_t)f->mem;
		xioctl(f->vm, KVM_SET_USER_MEMORY_REGION, &slot, "KVM_SET_USER_MEMORY_REGION");
		break;
	case VM_INIT:
		if (ioctl(f->vm, KVM_SET_TSS_ADDR, TSS_ADDR) < 0)
			die("KVM_SET_TSS_ADDR");
		xioctl(f->vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap, "KVM_SET_IDENTITY_MAP_ADDR");
		xioctl(f->vm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP");
		xioctl(f->vm, KVM_CREATE_PIT2, &pc, "KVM_CREATE_PIT2");
		break;
	case CREATE_VCPU:
		if ((f->vcpu = ioctl(f->vm, KVM_CREATE_VCPU, 0)) < 0)
			die("KVM_CREATE_VCPU");
		f->run = mmap(NULL, (size_t)t->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, f->vcpu, 0);
		if (f->run == MAP_FAILED)
			die("mmap kvm_run");
		break;
	case CPUID:
		xioctl(f->vcpu, KVM_SET_CPUID2, t->cpuid, "KVM_SET_CPUID2");
		break;
	case VCPU_STATE:
		vcpu_state(t, f->vcpu);
		break;
	case VM_STATE:
		vm_state(t, f->vm, f->vcpu);
		break;
	case STEPS:
		break;
	}
}

static double floor_run(const struct tmpl *t, const char *mem, uint64_t size, double *step_us)
{
	struct floor_vm f = { -1, -1, -1, MAP_FAILED, MAP_FAILED };
	double total = 0;
	for (int s = 0; s < STEPS; s++) {
		double t0 = now_ms();
		floor_step(t, &f, (enum step)s, mem, size);
		step_us[s] = (now_ms() - t0) * 1000.0;
		total += step_us[s];
	}
	munmap(f.run, (size_t)t->run_size);
	close(f.vcpu);
	close(f.vm); /* blocks for the kernel's teardown (untimed) */
	munmap(f.mem, size);
	close(f.mem_fd);
	return total;
}

/* ---------------------------------------------------------------- runs */

static void snapshot_counter(uint64_t mib, const char *dir)
{
	int p[2];
	if (pipe(p) < 0)
		die("pipe");
	microvm *vm;
	if (microvm_create(&vm) < 0 || microvm_set_memory(vm, mib) < 0 ||
	    microvm_set_kernel(vm, BENCH_TINY_DIR "/counter.elf", "every=50") < 0 ||
	    microvm_set_console(vm, -1, p[1]) < 0 || microvm_start(vm) < 0)
		die("boot");
	struct pollfd pf = { p[0], POLLIN, 0 };
	if (poll(&pf, 1, 60000) != 1)
		die("the guest printed nothing");
	if (microvm_pause(vm) < 0 || microvm_snapshot(vm, dir, 0) < 0) {
		fprintf(stderr, "bench-restore: snapshot: %s\n", microvm_last_error(vm));
		exit(1);
	}
	microvm_destroy(vm);
	close(p[0]);
	close(p[1]);
}

static double restore_run(const char *dir)
{
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	microvm *vm;
	char err[256];
	double t0 = now_ms();
	if (microvm_restore(&vm, dir, &rc, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-restore: restore: %s\n", err);
		exit(1);
	}
	double us = (now_ms() - t0) * 1000.0;
	microvm_destroy(vm);
	return us;
}

struct result {
	double restore, floor, step[STEPS];
};

static void measure(const struct tmpl *t, const char *base, uint64_t mib, int runs,
		    struct result *res)
{
	char dir[600], mem[700];
	snprintf(dir, sizeof(dir), "%s/snap-%llu", base, (unsigned long long)mib);
	snprintf(mem, sizeof(mem), "%s/memory", dir);
	snapshot_counter(mib, dir);
	double *r = calloc((size_t)runs, sizeof(double));
	double *fl = calloc((size_t)runs, sizeof(double));
	double *st = calloc((size_t)runs * STEPS, sizeof(double));
	if (!r || !fl || !st)
		die("calloc");
	for (int i = 0; i < runs; i++) {
		r[i] = restore_run(dir);
		usleep(30000); /* the VM's background teardown */
		double s[STEPS];
		fl[i] = floor_run(t, mem, mib << 20, s);
		for (int k = 0; k < STEPS; k++)
			st[k * runs + i] = s[k];
	}
	res->restore = median(r, runs);
	res->floor = median(fl, runs);
	for (int k = 0; k < STEPS; k++)
		res->step[k] = median(st + k * runs, runs);
	free(r);
	free(fl);
	free(st);
}

static void print(const struct result *res, int runs)
{
	printf("bench-restore: tiny counter guest, 1 vCPU, %d runs (medians, us)\n", runs);
	printf("| %-38s | %10s | %10s |\n|---|---|---|\n", "", "128 MiB", "1 GiB");
	printf("| %-38s | %10.1f | %10.1f |\n", "microvm_restore() (VM running)", res[0].restore,
	       res[1].restore);
	printf("| %-38s | %10.1f | %10.1f |\n", "floor: raw KVM calls", res[0].floor, res[1].floor);
	printf("| %-38s | %9.2fx | %9.2fx |\n", "restore / floor", res[0].restore / res[0].floor,
	       res[1].restore / res[1].floor);
	printf("\nthe floor, step by step (medians, us)\n");
	printf("| %-38s | %10s | %10s |\n|---|---|---|\n", "", "128 MiB", "1 GiB");
	for (int k = 0; k < STEPS; k++)
		printf("| %-38s | %10.1f | %10.1f |\n", step_names[k], res[0].step[k],
		       res[1].step[k]);
}

int main(int argc, char **argv)
{
	int runs = 50;
	const char *dir = NULL;
	static const struct option opts[] = {
		{ "runs", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		if (c == 'r')
			runs = atoi(optarg);
		else if (c == 'd')
			dir = optarg;
		else
			return 2;
	}
	if (runs < 1 || runs > RUNS_MAX) {
		fprintf(stderr, "usage: bench-restore [--runs 1..%d] [--dir DIR]\n", RUNS_MAX);
		return 2;
	}
	char tmp[] = "/var/tmp/bench-restore-XXXXXX";
	if (!dir && !(dir = mkdtemp(tmp)))
		die("mkdtemp");
	struct tmpl t;
	tmpl_init(&t);
	static const uint64_t sizes[] = { 128, 1024 };
	struct result res[2];
	for (int s = 0; s < 2; s++)
		measure(&t, dir, sizes[s], runs, &res[s]);
	print(res, runs);
	if (dir == tmp) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench-restore: could not remove %s\n", tmp);
	}
	return 0;
}
