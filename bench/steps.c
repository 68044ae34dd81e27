/*
 * bench-start-steps: where a start's time goes, step by step, next to the
 * same steps of the floor (bench/floor.h: the KVM calls any VMM makes for
 * the tiny guest), in one run, interleaved.
 *
 *   bench-start-steps [--runs N] [--no-pit] [--payload NAME]
 *
 * Each run times create -> first guest output (the "once" payload's byte
 * on the console pipe; the floor's first port write) and, inside it, every
 * ioctl by request, the mmap calls and the thread creation, through
 * -Wl,--wrap (so this links the internal static library). What the table
 * does not name is "the rest": the library's own work (ELF, boot tables,
 * device setup, locks) and, for the library, the hand-over from the vCPU
 * thread to the reader of the console pipe. Medians per run, microseconds.
 */
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <microvm.h>

#include "bench.h"
#include "floor.h"

enum step {
	S_CREATE_VM, S_MEMSLOT, S_VM_SETUP, S_CREATE_VCPU, S_CPUID, S_VCPU_REGS, S_RUN,
	S_OTHER_IOCTL, S_MMAP, S_THREAD, S_WAKE, S_HANDOVER, S_REST, S_TOTAL, N_STEPS
};

static const char *const step_name[N_STEPS] = {
	"KVM_CREATE_VM", "KVM_SET_USER_MEMORY_REGION",
	"VM setup: IRQCHIP, PIT2, TSS, IDENTITY_MAP", "KVM_CREATE_VCPU", "KVM_SET_CPUID2",
	"vCPU state: SREGS, REGS, FPU, LAPIC, MSRS", "KVM_RUN to the first output",
	"other ioctls", "mmap (RAM, kvm_run)", "thread creation (the vCPU's)",
	"new vCPU thread until its KVM_RUN", "exit -> the reader has the byte",
	"the rest (the library's own work)", "create -> first output",
};

static atomic_bool recording;
static _Atomic uint64_t spent[N_STEPS];
static _Atomic uint32_t count[N_STEPS];
/* The vCPU thread made (end of pthread_create), its first KVM_RUN's entry
 * and return: the thread's wake-up and the output's hand-over. */
static _Atomic uint64_t made_at, run_at, exit_at;

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static enum step step_of(unsigned long req)
{
	switch (req) {
	case KVM_CREATE_VM: return S_CREATE_VM;
	case KVM_SET_USER_MEMORY_REGION: return S_MEMSLOT;
	case KVM_CREATE_IRQCHIP: case KVM_CREATE_PIT2: case KVM_SET_TSS_ADDR:
	case KVM_SET_IDENTITY_MAP_ADDR: return S_VM_SETUP;
	case KVM_CREATE_VCPU: return S_CREATE_VCPU;
	case KVM_SET_CPUID2: return S_CPUID;
	case KVM_GET_SREGS: case KVM_SET_SREGS: case KVM_SET_REGS: case KVM_SET_FPU:
	case KVM_GET_LAPIC: case KVM_SET_LAPIC: case KVM_SET_MSRS: return S_VCPU_REGS;
	case KVM_RUN: return S_RUN;
	default: return S_OTHER_IOCTL;
	}
}

static void account(enum step s, uint64_t t0)
{
	atomic_fetch_add(&spent[s], now_ns() - t0);
	atomic_fetch_add(&count[s], 1);
}

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	bool rec = atomic_load(&recording);
	uint64_t t0 = rec ? now_ns() : 0;
	int r = __real_ioctl(fd, req, arg);
	if (rec)
		account(step_of(req), t0);
	uint64_t none = 0;
	if (rec && req == KVM_RUN && atomic_compare_exchange_strong(&run_at, &none, t0))
		atomic_store(&exit_at, now_ns());
	return r;
}

void *__real_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	bool rec = atomic_load(&recording);
	uint64_t t0 = rec ? now_ns() : 0;
	void *p = __real_mmap(a, len, prot, flags, fd, off);
	if (rec)
		account(S_MMAP, t0);
	return p;
}

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
	bool rec = atomic_load(&recording);
	uint64_t t0 = rec ? now_ns() : 0;
	int r = __real_pthread_create(t, a, fn, arg);
	if (rec) {
		account(S_THREAD, t0);
		atomic_store(&made_at, now_ns());
	}
	return r;
}

static void die(const char *what, microvm *vm)
{
	fprintf(stderr, "bench-start-steps: %s: %s\n", what, vm ? microvm_last_error(vm) : "");
	exit(1);
}

/* Start recording; the run's total goes to S_TOTAL when it stops. */
static uint64_t record(void)
{
	for (int s = 0; s < N_STEPS; s++) {
		atomic_store(&spent[s], 0);
		atomic_store(&count[s], 0);
	}
	atomic_store(&made_at, 0);
	atomic_store(&run_at, 0);
	atomic_store(&exit_at, 0);
	atomic_store(&recording, true);
	return now_ns();
}

/* Stop; this run's per-step microseconds into @row, calls into @calls. */
static void stop(uint64_t t0, double *row, uint32_t *calls)
{
	uint64_t end = now_ns(), total = end - t0, named = 0;
	atomic_store(&recording, false);
	uint64_t made = atomic_load(&made_at), run = atomic_load(&run_at);
	uint64_t ex = atomic_load(&exit_at);
	spent[S_WAKE] = made && run > made ? run - made : 0;
	spent[S_HANDOVER] = made && ex && end > ex ? end - ex : 0;
	for (int s = 0; s < S_REST; s++) {
		row[s] = (double)atomic_load(&spent[s]) / 1000.0;
		calls[s] = atomic_load(&count[s]);
		named += atomic_load(&spent[s]);
	}
	/* KVM_RUN may go on past the output in the vCPU thread: not "rest" */
	row[S_REST] = total > named ? (double)(total - named) / 1000.0 : 0;
	row[S_TOTAL] = (double)total / 1000.0;
}

static void floor_run(const struct floor_host *h, double *row, uint32_t *calls)
{
	struct floor_vm f;
	uint64_t t0 = record();
	floor_start(h, &f);
	stop(t0, row, calls);
	floor_destroy(h, &f);
}

static bool no_pit; /* --no-pit: both machines without a PIT */
static const char *payload = "once";

static void ours_run(int out[2], double *row, uint32_t *calls)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.elf", BENCH_TINY_DIR, payload);
	uint64_t t0 = record();
	microvm *vm;
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	if (microvm_set_memory(vm, 128) < 0 || microvm_set_console(vm, -1, out[1]) < 0 ||
	    microvm_set_kernel(vm, path, NULL) < 0 ||
	    microvm_set_pit(vm, !no_pit) < 0 || microvm_start(vm) < 0)
		die("start", vm);
	struct pollfd p = { out[0], POLLIN, 0 };
	char c;
	if (poll(&p, 1, 60000) != 1 || read(out[0], &c, 1) != 1)
		die("no guest output", vm);
	stop(t0, row, calls);
	microvm_exit ex = MICROVM_EXIT_INIT;
	microvm_wait(vm, 60000, &ex);
	microvm_destroy(vm);
	microvm_teardown_wait(-1); /* not under the floor's next start */
	char buf[256];
	while (poll(&p, 1, 0) == 1 && read(out[0], buf, sizeof(buf)) > 0)
		; /* the rest of its output */
}

static void print_table(double *fl[N_STEPS], double *us[N_STEPS], uint32_t fc[N_STEPS],
			uint32_t oc[N_STEPS], int runs)
{
	printf("| %-42s | %9s | %9s | %9s | %11s |\n", "step (us per start, median)", "floor",
	       "libmicrovm", "x floor", "calls f/l");
	printf("|---|---:|---:|---:|---:|\n");
	for (int s = 0; s < N_STEPS; s++) {
		double f = median(fl[s], runs), o = median(us[s], runs);
		char ratio[16] = "", calls[24] = "";
		if (f > 0.5)
			snprintf(ratio, sizeof(ratio), "%.2f", o / f);
		if (s < S_WAKE)
			snprintf(calls, sizeof(calls), "%u/%u", fc[s], oc[s]);
		printf("| %-42s | %9.1f | %9.1f | %9s | %11s |\n", step_name[s], f, o, ratio, calls);
	}
}

int main(int argc, char **argv)
{
	int runs = 200, c;
	static const struct option lo[] = { { "runs", required_argument, NULL, 'r' },
					     { "no-pit", no_argument, NULL, 'p' },
					     { "payload", required_argument, NULL, 'l' },
					     { NULL, 0, NULL, 0 } };
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'p')
			no_pit = true;
		else if (c == 'l')
			payload = optarg;
		else if (c != 'r' || (runs = atoi(optarg)) < 1)
			return 2;
	}
	struct floor_host h;
	floor_host_init(&h);
	h.no_pit = no_pit;
	int out[2];
	if (pipe(out) < 0)
		die("pipe", NULL);
	double *fl[N_STEPS], *us[N_STEPS], row[N_STEPS];
	uint32_t fc[N_STEPS] = { 0 }, oc[N_STEPS] = { 0 };
	for (int s = 0; s < N_STEPS; s++) {
		fl[s] = calloc((size_t)runs, sizeof(double));
		us[s] = calloc((size_t)runs, sizeof(double));
	}
	for (int i = 0; i < 20; i++)
		ours_run(out, row, oc); /* warm: the runtime's threads, caches */
	for (int i = 0; i < runs; i++) {
		floor_run(&h, row, fc);
		for (int s = 0; s < N_STEPS; s++)
			fl[s][i] = row[s];
		ours_run(out, row, oc);
		for (int s = 0; s < N_STEPS; s++)
			us[s][i] = row[s];
	}
	printf("bench-start-steps: libmicrovm %s, %d runs each, interleaved; tiny guest "
	       "(1 vCPU, 128 MiB%s)\n\n", microvm_version(), runs, no_pit ? ", no PIT" : "");
	print_table(fl, us, fc, oc, runs);
	return 0;
}
