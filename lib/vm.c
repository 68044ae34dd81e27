/* VM life cycle: create, configure, build + start, pause/resume/stop, wait,
 * destroy. */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "abi.h"
#include "arch/arch.h"
#include "errbuf.h"
#include "file.h"
#include "reaper.h"
#include "vcpu.h"
#include "virtio/devices.h"
#include "vm_devices.h"

#define VCPU_STACK_SIZE (512 * 1024)

MICROVM_API const char *microvm_version(void)
{
	return MICROVM_VERSION_STRING;
}

void vm_notify(struct microvm *vm)
{
	uint64_t one = 1;
	int fd = __atomic_load_n(&vm->run.event_fd, __ATOMIC_ACQUIRE);
	if (fd < 0)
		return; /* nobody asked for it (microvm_event_fd) */
	ssize_t r = write(fd, &one, sizeof(one));
	(void)r; /* EAGAIN only if the counter is saturated: still readable */
}

void vm_request_exit(struct microvm *vm, uint32_t reason, int error, uint32_t vcpu,
		     const char *fmt, ...)
{
	if (vcpu == UINT32_MAX)
		vcpu = vcpu_current_index();
	pthread_mutex_lock(&vm->run.lock);
	if (!vm->run.exit_set) {
		vm->run.exit_set = true;
		vm->run.exit_info.reason = reason;
		vm->run.exit_info.error = error;
		vm->run.exit_info.vcpu = vcpu == UINT32_MAX ? 0 : vcpu;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vm->run.exit_info.message, sizeof(vm->run.exit_info.message), fmt, ap);
		va_end(ap);
		vm_info(vm, "VM exit: %s", vm->run.exit_info.message);
	}
	atomic_fetch_or(&vm->run.requests, REQ_STOP);
	vcpu_kick_all(vm);
	pthread_cond_broadcast(&vm->run.cond); /* wake parked vCPUs */
	pthread_mutex_unlock(&vm->run.lock);
}

/* ---------------------------------------------------------------- create */

MICROVM_API int microvm_create(microvm **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	struct microvm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	pthread_mutex_init(&vm->api_lock, NULL);
	pthread_mutex_init(&vm->run.lock, NULL);
	pthread_mutex_init(&vm->diag.err_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->run.cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->cfg.nr_vcpus = 1;
	vm->cfg.mem_mib = 128;
	vm->cfg.console_in = -1;
	vm->cfg.console_out = -1;
	vm->cfg.kick_signal = SIGRTMIN + MICROVM_DEFAULT_KICK_SIGNAL_OFFSET;
	vm->diag.log_level = MICROVM_LOG_WARN;
	vm->kvm.kvm_fd = vm->kvm.vm_fd = -1;
	vm->kvm.mem.fd = -1;
	vm->snap.pagemap_fd = -1;
	vm->run.state = MICROVM_STATE_CONFIGURED;
	vm->run.event_fd = -1; /* made by the first microvm_event_fd() */
	vm_host_init(vm);
	int r = platform_create(&vm->dev.host, &vm->kvm.pio, &vm->dev.platform);
	if (r < 0) {
		microvm_destroy(vm);
		return r;
	}
	*out = vm;
	return 0;
}

/* ------------------------------------------------------------- configure */

/* Lock the API and check the VM is CONFIGURED. Returns 0 with the lock held
 * or an error without it. */
int vm_lock_configured(struct microvm *vm, const char *what)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	if (microvm_state(vm) != MICROVM_STATE_CONFIGURED) {
		int r = vm_error(vm, -EBUSY, "%s: the VM has been started; configure it before "
				 "microvm_start()", what);
		pthread_mutex_unlock(&vm->api_lock);
		return r;
	}
	return 0;
}

MICROVM_API int microvm_set_vcpus(microvm *vm, uint32_t count)
{
	int r = vm_lock_configured(vm, "set_vcpus");
	if (r < 0)
		return r;
	if (count == 0 || count > MICROVM_MAX_VCPUS)
		r = vm_error(vm, -EINVAL, "set_vcpus: %u vCPUs is out of range 1..%d", count,
			     MICROVM_MAX_VCPUS);
	else
		vm->cfg.nr_vcpus = count;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

static uint64_t host_ram_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

MICROVM_API int microvm_set_memory(microvm *vm, uint64_t mib)
{
	int r = vm_lock_configured(vm, "set_memory");
	if (r < 0)
		return r;
	uint64_t host_mib = host_ram_bytes() / MIB;
	if (mib < MICROVM_MIN_MEMORY_MIB || mib > host_mib)
		r = vm_error(vm, -EINVAL,
			     "set_memory: %llu MiB is out of range %d..%llu (host RAM)",
			     (unsigned long long)mib, MICROVM_MIN_MEMORY_MIB,
			     (unsigned long long)host_mib);
	else
		vm->cfg.mem_mib = mib;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* Check @path names a readable regular file. */
static int check_file(struct microvm *vm, const char *what, const char *path)
{
	struct stat st;
	int fd = file_open_regular(path, O_RDONLY, &st);
	if (fd == -EINVAL)
		return vm_error(vm, -EINVAL, "%s: %s: not a regular file", what, path);
	if (fd < 0)
		return vm_error(vm, fd, "%s: %s: %s", what, path, strerror(-fd));
	close(fd);
	return 0;
}

static int replace_string(char **slot, const char *value)
{
	char *copy = NULL;
	if (value && !(copy = strdup(value)))
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

MICROVM_API int microvm_set_kernel(microvm *vm, const char *path, const char *cmdline)
{
	int r = vm_lock_configured(vm, "set_kernel");
	if (r < 0)
		return r;
	if (!path)
		r = vm_error(vm, -EINVAL, "set_kernel: path is NULL");
	else if (cmdline && strlen(cmdline) >= MICROVM_MAX_CMDLINE)
		r = vm_error(vm, -EINVAL, "set_kernel: command line is %zu bytes (max %d)",
			     strlen(cmdline), MICROVM_MAX_CMDLINE - 1);
	else
		r = check_file(vm, "kernel", path);
	if (r == 0) {
		char *old_path = vm->cfg.kernel_path, *old_cmd = vm->cfg.cmdline;
		vm->cfg.kernel_path = vm->cfg.cmdline = NULL;
		if (replace_string(&vm->cfg.kernel_path, path) < 0 ||
		    replace_string(&vm->cfg.cmdline, cmdline ? cmdline : "") < 0) {
			free(vm->cfg.kernel_path);
			free(vm->cfg.cmdline);
			vm->cfg.kernel_path = old_path;
			vm->cfg.cmdline = old_cmd;
			r = vm_error(vm, -ENOMEM, "set_kernel: out of memory");
		} else {
			free(old_path);
			free(old_cmd);
		}
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_set_initrd(microvm *vm, const char *path)
{
	int r = vm_lock_configured(vm, "set_initrd");
	if (r < 0)
		return r;
	if (path)
		r = check_file(vm, "initrd", path);
	if (r == 0 && replace_string(&vm->cfg.initrd_path, path) < 0)
		r = vm_error(vm, -ENOMEM, "set_initrd: out of memory");
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_set_console(microvm *vm, int in_fd, int out_fd)
{
	int r = vm_lock_configured(vm, "set_console");
	if (r < 0)
		return r;
	if (in_fd < -1 || (in_fd >= 0 && fcntl(in_fd, F_GETFD) < 0))
		r = vm_error(vm, -EINVAL, "set_console: input fd %d is not open", in_fd);
	else if (out_fd < -1 || (out_fd >= 0 && fcntl(out_fd, F_GETFD) < 0))
		r = vm_error(vm, -EINVAL, "set_console: output fd %d is not open", out_fd);
	else {
		vm->cfg.console_in = in_fd;
		vm->cfg.console_out = out_fd;
		platform_set_console(vm->dev.platform, in_fd, out_fd);
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_set_acpi(microvm *vm, int enabled)
{
	int r = vm_lock_configured(vm, "set_acpi");
	if (r < 0)
		return r;
	vm->cfg.no_acpi = !enabled;
	pthread_mutex_unlock(&vm->api_lock);
	return 0;
}

MICROVM_API int microvm_set_pit(microvm *vm, int enabled)
{
	int r = vm_lock_configured(vm, "set_pit");
	if (r < 0)
		return r;
	vm->cfg.no_pit = !enabled;
	pthread_mutex_unlock(&vm->api_lock);
	return 0;
}

MICROVM_API int microvm_set_seccomp(microvm *vm, uint32_t mode)
{
	int r = vm_lock_configured(vm, "set_seccomp");
	if (r < 0)
		return r;
	if (mode > MICROVM_SECCOMP_LOG)
		r = vm_error(vm, -EINVAL, "set_seccomp: unknown mode %u", mode);
	else
		vm->sec.mode = mode;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_seccomp_allow(microvm *vm, int32_t nr)
{
	int r = vm_lock_configured(vm, "seccomp_allow");
	if (r < 0)
		return r;
	if (nr < 0 || nr >= 1024)
		r = vm_error(vm, -EINVAL, "seccomp_allow: %d is not a system call number", nr);
	else if (vm->sec.n_extra >= SECCOMP_MAX_EXTRA)
		r = vm_error(vm, -ENOSPC, "seccomp_allow: more than %d entries", SECCOMP_MAX_EXTRA);
	else
		vm->sec.extra[vm->sec.n_extra++] = nr;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_set_kick_signal(microvm *vm, int signo)
{
	int r = vm_lock_configured(vm, "set_kick_signal");
	if (r < 0)
		return r;
	if (signo < SIGRTMIN || signo > SIGRTMAX)
		r = vm_error(vm, -EINVAL, "set_kick_signal: %d is not in SIGRTMIN..SIGRTMAX (%d..%d)",
			     signo, SIGRTMIN, SIGRTMAX);
	else
		vm->cfg.kick_signal = signo;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

int microvm__add_mmio(struct microvm *vm, uint64_t base, uint64_t len,
		      const struct bus_ops *ops, void *opaque, const char *name)
{
	int r = vm_lock_configured(vm, "add_mmio");
	if (r < 0)
		return r;
	r = bus_register(&vm->kvm.mmio, base, len, ops, opaque, name);
	if (r < 0)
		vm_error(vm, r, "MMIO device %s at 0x%llx+0x%llx: cannot register", name,
			 (unsigned long long)base, (unsigned long long)len);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* ------------------------------------------------------------ build/start */

/*
 * Release everything microvm_start() built. Closing a KVM VM fd blocks for
 * the kernel's teardown (~16 ms), so when @async the work goes to the
 * reaper threads (lib/reaper.h) and this returns at once.
 */
static void teardown_runtime(struct microvm *vm, bool async)
{
	evloop_release(&vm->dev.evloop); /* no more device work once this returns */
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		virtio_mmio_release(vm->dev.virtio[i]);
	if (vm->run.vcpus_created == 0 && vm->kvm.vm_fd < 0 && vm->kvm.kvm_fd < 0 && !vm->kvm.mem.host) {
		free(vm->run.vcpus);
		vm->run.vcpus = NULL;
		return;
	}
	struct reap local;
	struct reap *rp = async ? malloc(sizeof(*rp)) : NULL;
	if (!rp)
		rp = &local;
	rp->nfds = rp->nruns = 0;
	rp->run_size = (size_t)vm->kvm.run_size;
	for (uint32_t i = 0; i < vm->run.vcpus_created; i++) {
		rp->runs[rp->nruns++] = vm->run.vcpus[i].run;
		rp->fds[rp->nfds++] = vm->run.vcpus[i].fd;
	}
	if (vm->kvm.vm_fd >= 0)
		rp->fds[rp->nfds++] = vm->kvm.vm_fd;
	if (vm->kvm.kvm_fd >= 0)
		rp->fds[rp->nfds++] = vm->kvm.kvm_fd;
	rp->mem = vm->kvm.mem;
	if (rp == &local)
		reap_now(rp);
	else
		reap_later(rp);
	free(vm->run.vcpus);
	vm->run.vcpus = NULL;
	vm->run.vcpus_created = 0;
	vm->kvm.vm_fd = vm->kvm.kvm_fd = -1;
	memset(&vm->kvm.mem, 0, sizeof(vm->kvm.mem));
	vm->kvm.mem.fd = -1;
}

/* What /dev/kvm offers: the same for every VM of the process, so asked
 * once (the first start that succeeds) and kept. */
struct kvm_host_facts {
	uint32_t max_vcpus;
	int run_size;
};

static int kvm_host_check(int kvm_fd, struct kvm_host_facts *f, char *err, size_t errlen)
{
	int v = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION)
		return errbuf_fail(err, errlen, -ENOTSUP, "/dev/kvm: API version %d, need %d", v,
				   KVM_API_VERSION);
	static const struct { int cap; const char *name; } caps[] = {
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
		{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD" },
		{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD" },
	};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0)
			return errbuf_fail(err, errlen, -ENOTSUP, "/dev/kvm lacks %s", caps[i].name);
	int r = arch_check_kvm(kvm_fd, err, errlen);
	if (r < 0)
		return r;
	int max = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max <= 0)
		max = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	f->max_vcpus = max <= 0 ? 4 : (uint32_t)max;
	f->run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (f->run_size < (int)sizeof(struct kvm_run))
		return errbuf_fail(err, errlen, -ENOTSUP, "KVM_GET_VCPU_MMAP_SIZE: %s",
				   strerror(errno));
	return 0;
}

static int kvm_host_facts(int kvm_fd, struct kvm_host_facts *out, char *err, size_t errlen)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct kvm_host_facts facts;
	static bool known;
	int r = 0;
	pthread_mutex_lock(&lock);
	if (!known && (r = kvm_host_check(kvm_fd, &facts, err, errlen)) == 0)
		known = true;
	*out = facts;
	pthread_mutex_unlock(&lock);
	return r;
}

int vm_kvm_open(struct microvm *vm)
{
	vm->kvm.kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm.kvm_fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return vm_error(vm, -ENOENT, "/dev/kvm does not exist: KVM is not available "
					"on this host (load kvm_intel/kvm_amd or enable "
					"virtualization)");
		if (e == EACCES || e == EPERM)
			return vm_error(vm, -e, "/dev/kvm: permission denied (add the user to "
					"the kvm group)");
		return vm_error(vm, -e, "/dev/kvm: %s", strerror(e));
	}
	struct kvm_host_facts f;
	char err[128];
	int r = kvm_host_facts(vm->kvm.kvm_fd, &f, err, sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "%s", err);
	if (vm->cfg.nr_vcpus > f.max_vcpus)
		return vm_error(vm, -EINVAL, "%u vCPUs requested, this host's KVM allows %u",
				vm->cfg.nr_vcpus, f.max_vcpus);
	vm->kvm.run_size = f.run_size;
	return 0;
}

int vm_memslots_set(struct microvm *vm)
{
	uint32_t flags = vm->snap.dirty_tracking ? KVM_MEM_LOG_DIRTY_PAGES : 0;
	struct kvm_userspace_memory_region low = {
		.slot = 0,
		.flags = flags,
		.guest_phys_addr = 0,
		.memory_size = vm->kvm.mem.low_size,
		.userspace_addr = (uintptr_t)vm->kvm.mem.host,
	};
	if (ioctl(vm->kvm.vm_fd, KVM_SET_USER_MEMORY_REGION, &low) < 0)
		return vm_error(vm, -errno, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
	if (vm->kvm.mem.size > vm->kvm.mem.low_size) {
		struct kvm_userspace_memory_region high = {
			.slot = 1,
			.flags = flags,
			.guest_phys_addr = vm->kvm.mem.high_base,
			.memory_size = vm->kvm.mem.size - vm->kvm.mem.low_size,
			.userspace_addr = (uintptr_t)(vm->kvm.mem.host + vm->kvm.mem.low_size),
		};
		if (ioctl(vm->kvm.vm_fd, KVM_SET_USER_MEMORY_REGION, &high) < 0)
			return vm_error(vm, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
					strerror(errno));
	}
	return 0;
}

static int memory_create(struct microvm *vm)
{
	/* A restored VM comes with its RAM mapped from the snapshot. */
	int r = vm->kvm.mem.host ? 0 : arch_ram_init(&vm->kvm.mem, vm->cfg.mem_mib * MIB);
	if (r < 0)
		return vm_error(vm, r, "guest RAM (%llu MiB): %s",
				(unsigned long long)vm->cfg.mem_mib, strerror(-r));
	return vm_memslots_set(vm);
}

/*
 * KVM_CREATE_VM fails with EINTR when the calling thread has a signal or task
 * work pending while the kernel registers the VM's MMU notifier: that walk
 * (mm_take_all_locks) checks signal_pending() once per mapping of the
 * process and gives up. io_uring queues task work to a thread with
 * TWA_SIGNAL (e.g. when a ring the thread used is torn down), so a process
 * that has had VMs with io_uring disks hits this in a few percent of
 * creates, more the more mappings it has. Nothing was created; the pending
 * work runs on the way back to user space, so trying again succeeds. Bounded
 * so that a storm of signals gives a clean -EAGAIN instead of a busy loop.
 * No other setup ioctl we issue sleeps interruptibly.
 */
#define KVM_CREATE_VM_TRIES 64

static int create_vm_fd(struct microvm *vm)
{
	for (int i = 0; i < KVM_CREATE_VM_TRIES; i++) {
		int fd = ioctl(vm->kvm.kvm_fd, KVM_CREATE_VM, 0);
		if (fd >= 0)
			return fd;
		if (errno != EINTR)
			return vm_error(vm, -errno, "KVM_CREATE_VM: %s", strerror(errno));
	}
	return vm_error(vm, -EAGAIN, "KVM_CREATE_VM: interrupted %d times in a row by signals "
			"or task work pending on this thread; try again", KVM_CREATE_VM_TRIES);
}

int vm_kvm_create(struct microvm *vm)
{
	int fd = create_vm_fd(vm);
	if (fd < 0)
		return fd;
	vm->kvm.vm_fd = fd;
	/* RAM first: a memslot change after KVM_CREATE_IRQCHIP waits for an
	 * SRCU grace period (measured ~4-8 ms per VM); before it, ~0.03 ms. */
	int r = memory_create(vm);
	if (r < 0)
		return r;
	char err[256];
	r = arch_vm_init(vm->kvm.vm_fd, !vm->cfg.no_pit, err, sizeof(err));
	return r < 0 ? vm_error(vm, r, "%s", err) : 0;
}

static int load_guest(struct microvm *vm, uint64_t *entry)
{
	struct arch_mmio_device mmio[VIRTIO_MMIO_MAX_DEVICES];
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		mmio[i] = (struct arch_mmio_device){ vm->dev.virtio[i]->base, VIRTIO_MMIO_SIZE,
						     vm->dev.virtio[i]->gsi };
	struct arch_boot boot = {
		.kernel_path = vm->cfg.kernel_path,
		.initrd_path = vm->cfg.initrd_path,
		.cmdline = vm->cfg.cmdline,
		.vcpus = vm->cfg.nr_vcpus,
		.acpi = !vm->cfg.no_acpi,
		.n_mmio = vm->dev.nr_virtio,
		.mmio = mmio,
	};
	char err[512];
	int r = arch_load_guest(&vm->kvm.mem, &boot, entry, err, sizeof(err));
	return r < 0 ? vm_error(vm, r, "%s", err) : 0;
}

/* Create the vCPUs (fd + kvm_run mapping) and give each its first state
 * through @ops->load_vcpu. */
static int vcpus_create(struct microvm *vm, const struct vm_start_ops *ops, void *ctx)
{
	vm->run.vcpus = calloc(vm->cfg.nr_vcpus, sizeof(*vm->run.vcpus));
	if (!vm->run.vcpus)
		return vm_error(vm, -ENOMEM, "out of memory for vCPUs");
	for (uint32_t i = 0; i < vm->cfg.nr_vcpus; i++) {
		struct vcpu *v = &vm->run.vcpus[i];
		v->vm = vm;
		v->index = i;
		v->fd = ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (v->fd < 0)
			return vm_error(vm, -errno, "KVM_CREATE_VCPU %u: %s", i, strerror(errno));
		v->run = mmap(NULL, (size_t)vm->kvm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			      v->fd, 0);
		if (v->run == MAP_FAILED) {
			int e = vm_error(vm, -errno, "mmap of vCPU %u: %s", i, strerror(errno));
			close(v->fd);
			return e;
		}
		vm->run.vcpus_created++;
		int r = ops->load_vcpu(ctx, vm, i);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Wait on vm->cond (vm->lock held) for a vCPU to change state. A kick can be
 * lost when its signal lands while the vCPU thread is outside KVM_RUN and
 * then blocks elsewhere (e.g. writing to a full console pipe), so kick again
 * every KICK_RETRY_MS until the vCPUs respond.
 */
#define KICK_RETRY_MS 20
void vm_wait_or_rekick(struct microvm *vm)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += KICK_RETRY_MS * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_cond_timedwait(&vm->run.cond, &vm->run.lock, &ts) == ETIMEDOUT)
		vcpu_kick_all(vm);
}

bool vm_wait_parked(struct microvm *vm)
{
	while (vm->run.vcpus_parked + vm->run.vcpus_exited < vm->run.vcpus_running &&
	       !(atomic_load(&vm->run.requests) & REQ_STOP))
		vm_wait_or_rekick(vm);
	return !(atomic_load(&vm->run.requests) & REQ_STOP) && vm->run.vcpus_exited == 0;
}

/* Wait until every started vCPU thread has left its loop, then join them. */
static void stop_threads(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	while (vm->run.vcpus_exited < vm->run.vcpus_running)
		vm_wait_or_rekick(vm);
	pthread_mutex_unlock(&vm->run.lock);
	for (uint32_t i = 0; i < vm->run.vcpus_created; i++) {
		struct vcpu *v = &vm->run.vcpus[i];
		if (v->thread_started) {
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
}

/* Attach the VM to an event thread (one with its seccomp filter, if on),
 * or to a loop of its own that the embedder runs (microvm_loop_run). */
int vm_devices_start(struct microvm *vm)
{
	struct evloop_filter f;
	bool filtered = !vm->cfg.embedder_loop && vm_seccomp_evloop_filter(vm, &f);
	int r = vm->cfg.embedder_loop ? evloop_init_manual(&vm->dev.evloop)
				      : evloop_init(&vm->dev.evloop, filtered ? &f : NULL);
	if (r < 0)
		return vm_error(vm, r, "event loop thread: %s", strerror(-r));
	if (filtered) {
		vm->dev.evloop.before = vm_seccomp_work_begin;
		vm->dev.evloop.after = vm_seccomp_work_end;
		vm->dev.evloop.owner = vm;
	}
	r = platform_start(vm->dev.platform, &vm->dev.evloop);
	if (r < 0)
		return vm_error(vm, r, "console input fd %d: %s", vm->cfg.console_in, strerror(-r));
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++) {
		r = virtio_mmio_start(vm->dev.virtio[i]);
		if (r < 0)
			return vm_error(vm, r, "virtio %s: %s", vm->dev.virtio[i]->ops->name,
					strerror(-r));
	}
	evloop_start(&vm->dev.evloop);
	return 0;
}

int vm_threads_start(struct microvm *vm, bool paused)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int r = 0;
	vcpu_install_kick_handler(vm->cfg.kick_signal);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, VCPU_STACK_SIZE);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* The threads wait at a gate (vm->gate_open) until all exist, so a
	 * failure here never lets guest code run or the state change. */
	pthread_mutex_lock(&vm->run.lock);
	for (uint32_t i = 0; i < vm->cfg.nr_vcpus; i++) {
		struct vcpu *v = &vm->run.vcpus[i];
		int e = pthread_create(&v->thread, &attr, vcpu_thread, v);
		if (e) {
			r = vm_error(vm, -e, "creating vCPU thread %u: %s", i, strerror(e));
			break;
		}
		v->thread_started = true;
		vm->run.vcpus_running++;
	}
	if (r == 0) {
		vm->run.gate_open = true;
		if (paused)
			atomic_fetch_or(&vm->run.requests, REQ_PAUSE);
		vm->run.state = paused ? MICROVM_STATE_PAUSED : MICROVM_STATE_RUNNING;
	} else {
		atomic_fetch_or(&vm->run.requests, REQ_STOP);
	}
	pthread_cond_broadcast(&vm->run.cond);
	pthread_mutex_unlock(&vm->run.lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r < 0)
		stop_threads(vm); /* they never passed the gate */
	return r;
}

void vm_start_rollback(struct microvm *vm)
{
	teardown_runtime(vm, false);
	pthread_mutex_lock(&vm->run.lock);
	vm->run.state = MICROVM_STATE_CONFIGURED;
	vm->run.vcpus_running = vm->run.vcpus_exited = vm->run.vcpus_parked = 0;
	vm->run.gate_open = false;
	vm->run.exit_set = false;
	memset(&vm->run.exit_info, 0, sizeof(vm->run.exit_info));
	atomic_store(&vm->run.requests, 0);
	pthread_mutex_unlock(&vm->run.lock);
}

int vm_start_with(struct microvm *vm, const struct vm_start_ops *ops, void *ctx)
{
	int r = vm_seccomp_prepare(vm);
	if (r == 0)
		r = vm_kvm_open(vm);
	if (r == 0)
		r = vm_kvm_create(vm);
	if (r == 0 && ops->load_vm)
		r = ops->load_vm(ctx, vm);
	if (r == 0)
		r = virtio_devices_add(vm); /* before the guest's tables are built */
	if (r == 0 && ops->load_guest)
		r = ops->load_guest(ctx, vm);
	if (r == 0)
		r = vcpus_create(vm, ops, ctx);
	if (r == 0)
		r = vm_devices_start(vm);
	if (r == 0 && ops->load_devices)
		r = ops->load_devices(ctx, vm);
	if (r == 0) {
		close(vm->kvm.kvm_fd); /* not needed once the VM exists */
		vm->kvm.kvm_fd = -1;
		r = vm_threads_start(vm, ops->paused);
	}
	if (r < 0)
		vm_start_rollback(vm);
	return r;
}

/* A boot: the kernel's entry point and what vCPU setup reuses. */
struct boot_ctx {
	uint64_t entry;
	void *cookie;
};

static int boot_guest(void *ctx, struct microvm *vm)
{
	struct boot_ctx *b = ctx;
	char err[256];
	int r = load_guest(vm, &b->entry);
	if (r == 0 && (r = arch_vcpu_prepare(vm->kvm.kvm_fd, &b->cookie, err, sizeof(err))) < 0)
		vm_error(vm, r, "%s", err);
	return r;
}

static int boot_vcpu(void *ctx, struct microvm *vm, uint32_t i)
{
	struct boot_ctx *b = ctx;
	char err[128];
	int r = arch_vcpu_init(vm->run.vcpus[i].fd, b->cookie, i, vm->cfg.nr_vcpus, b->entry,
			       !vm->cfg.no_pit, err, sizeof(err));
	return r < 0 ? vm_error(vm, r, "vCPU %u: %s", i, err) : 0;
}

static const struct vm_start_ops boot_ops = {
	.load_guest = boot_guest,
	.load_vcpu = boot_vcpu,
};

MICROVM_API int microvm_start(microvm *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = 0, state = microvm_state(vm);
	if (state == MICROVM_STATE_RUNNING || state == MICROVM_STATE_PAUSED)
		r = vm_error(vm, -EBUSY, "start: the VM is already started");
	else if (state == MICROVM_STATE_STOPPED)
		r = vm_error(vm, -EINVAL, "start: the VM has stopped; create a new one");
	else if (!vm->cfg.kernel_path)
		r = vm_error(vm, -EINVAL, "start: no kernel set (microvm_set_kernel)");
	struct boot_ctx b = { 0 };
	if (r == 0)
		r = vm_start_with(vm, &boot_ops, &b);
	arch_vcpu_unprepare(b.cookie);
	if (r == 0) {
		vm_info(vm, "started: %u vCPU(s), %llu MiB, entry 0x%llx", vm->cfg.nr_vcpus,
			(unsigned long long)vm->cfg.mem_mib, (unsigned long long)b.entry);
		vm_notify(vm);
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* ------------------------------------------------------- run-time control */

MICROVM_API int microvm_pause(microvm *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	pthread_mutex_lock(&vm->run.lock);
	int r = 0;
	if (vm->run.state == MICROVM_STATE_PAUSED) {
		r = 0;
	} else if (vm->run.state != MICROVM_STATE_RUNNING) {
		r = -EINVAL;
	} else {
		atomic_fetch_or(&vm->run.requests, REQ_PAUSE);
		vcpu_kick_all(vm);
		if (!vm_wait_parked(vm)) {
			/* The VM is stopping: let it finish, so the caller sees
			 * STOPPED once this returns. */
			atomic_fetch_and(&vm->run.requests, ~REQ_PAUSE);
			pthread_cond_broadcast(&vm->run.cond);
			while (vm->run.vcpus_exited < vm->run.vcpus_running)
				vm_wait_or_rekick(vm);
			r = -EINVAL;
		} else {
			vm->run.state = MICROVM_STATE_PAUSED;
		}
	}
	pthread_mutex_unlock(&vm->run.lock);
	if (r < 0)
		vm_error(vm, r, "pause: the VM is not running");
	else
		vm_notify(vm);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_resume(microvm *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	pthread_mutex_lock(&vm->run.lock);
	int r = 0;
	if (vm->run.state != MICROVM_STATE_PAUSED) {
		r = -EINVAL;
	} else {
		atomic_fetch_and(&vm->run.requests, ~REQ_PAUSE);
		vm->run.state = MICROVM_STATE_RUNNING;
		pthread_cond_broadcast(&vm->run.cond);
	}
	pthread_mutex_unlock(&vm->run.lock);
	if (r < 0)
		vm_error(vm, r, "resume: the VM is not paused");
	else
		vm_notify(vm);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* Stop a started VM and join its threads. Called with api_lock held. */
static void stop_locked(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	bool running = vm->run.vcpus_exited < vm->run.vcpus_running;
	pthread_mutex_unlock(&vm->run.lock);
	if (running)
		vm_request_exit(vm, MICROVM_EXIT_STOPPED, 0, 0, "stopped by the host");
	stop_threads(vm);
	evloop_stop(&vm->dev.evloop);
}

MICROVM_API int microvm_stop(microvm *vm)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = 0;
	if (microvm_state(vm) == MICROVM_STATE_CONFIGURED)
		r = vm_error(vm, -EINVAL, "stop: the VM was never started");
	else
		stop_locked(vm);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_wait(microvm *vm, int timeout_ms, microvm_exit *out)
{
	if (!vm)
		return -EINVAL;
	if (timeout_ms < -1)
		return vm_error(vm, -EINVAL, "wait: timeout %d ms (use -1 for no limit)",
				timeout_ms);
	char err[200];
	if (out && abi_prepare_out(out, sizeof(*out), ABI_EXIT_MIN, "wait: microvm_exit", err,
				   sizeof(err)) < 0)
		return vm_error(vm, -EINVAL, "%s", err);
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms > 0) {
		deadline.tv_sec += timeout_ms / 1000;
		deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
	}
	int r = 0;
	pthread_mutex_lock(&vm->run.lock);
	if (vm->run.state == MICROVM_STATE_CONFIGURED) {
		r = -EINVAL;
	} else {
		while (vm->run.state != MICROVM_STATE_STOPPED) {
			if (timeout_ms == 0) {
				r = -ETIMEDOUT;
				break;
			}
			if (timeout_ms < 0) {
				pthread_cond_wait(&vm->run.cond, &vm->run.lock);
			} else if (pthread_cond_timedwait(&vm->run.cond, &vm->run.lock, &deadline) ==
				   ETIMEDOUT) {
				if (vm->run.state != MICROVM_STATE_STOPPED)
					r = -ETIMEDOUT;
				break;
			}
		}
	}
	if (r == 0 && out) {
		uint32_t size = out->size; /* the caller's, kept */
		*out = vm->run.exit_info;
		out->size = size;
	}
	pthread_mutex_unlock(&vm->run.lock);
	return r;
}

MICROVM_API int microvm_event_fd(const microvm *vm)
{
	if (!vm)
		return -EINVAL;
	struct microvm *m = (struct microvm *)vm;
	pthread_mutex_lock(&m->run.lock);
	int fd = m->run.event_fd;
	if (fd < 0) {
		/* readable at once if the state changed before anyone asked */
		bool changed = m->run.state != MICROVM_STATE_CONFIGURED;
		fd = eventfd(changed, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			fd = -errno;
		else
			__atomic_store_n(&m->run.event_fd, fd, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&m->run.lock);
	return fd;
}

MICROVM_API int microvm_state(const microvm *vm)
{
	if (!vm)
		return -EINVAL;
	struct microvm *m = (struct microvm *)vm;
	pthread_mutex_lock(&m->run.lock);
	int s = m->run.state;
	pthread_mutex_unlock(&m->run.lock);
	return s;
}

MICROVM_API void microvm_destroy(microvm *vm)
{
	if (!vm)
		return;
	pthread_mutex_lock(&vm->api_lock);
	if (microvm_state(vm) != MICROVM_STATE_CONFIGURED)
		stop_locked(vm);
	teardown_runtime(vm, true);
	pthread_mutex_unlock(&vm->api_lock);

	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		virtio_mmio_free(vm->dev.virtio[i]);
	platform_destroy(vm->dev.platform);
	bus_release(&vm->kvm.pio);
	bus_release(&vm->kvm.mmio);
	free(vm->cfg.kernel_path);
	free(vm->cfg.cmdline);
	free(vm->cfg.initrd_path);
	free(vm->cfg.vsock_uds_path);
	free(vm->snap.base);
	free(vm->snap.reset_state);
	free(vm->snap.reset_dir);
	if (vm->snap.pagemap_fd >= 0)
		close(vm->snap.pagemap_fd);
	vm_seccomp_release(vm);
	if (vm->run.event_fd >= 0)
		close(vm->run.event_fd);
	pthread_mutex_destroy(&vm->api_lock);
	pthread_mutex_destroy(&vm->run.lock);
	pthread_mutex_destroy(&vm->diag.err_lock);
	pthread_cond_destroy(&vm->run.cond);
	free(vm);
}
