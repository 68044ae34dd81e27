/* The VM object: all state of one VM lives here (no globals). */
#ifndef MICROVM_VM_H
#define MICROVM_VM_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "microvm.h"
#include "arch/arch.h"
#include "bus.h"
#include "memory.h"
#include "devices/host.h"
#include "evloop.h"
#include "virtio/mmio.h"
#include "vm_seccomp.h"

struct arch_platform;
struct kvm_run;
struct virtio_console;
struct virtio_rng;
struct virtio_vsock;

struct vcpu {
	struct microvm *vm;
	uint32_t index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	bool io_pending; /* last exit was PIO/MMIO: KVM completes it on the next
			  * KVM_RUN (needed before its state is saved) */
};

/* Requests to vCPU threads (microvm.requests). */
#define REQ_PAUSE 1u
#define REQ_STOP 2u

/* The configuration, set while CONFIGURED (setters; lib/vm_config.c). */
struct vm_config {
	uint32_t nr_vcpus;
	uint64_t mem_mib;
	char *kernel_path;
	char *cmdline;
	char *initrd_path;
	int console_in;  /* borrowed */
	int console_out; /* borrowed */
	uint32_t console_type; /* MICROVM_CONSOLE_*: which device gets the fds */
	bool rng_enabled;
	int kick_signal;
	bool no_acpi;    /* MP table only; virtio devices on the command line */
	bool no_pit;     /* no i8254; the TSC-deadline timer in CPUID instead */
	bool embedder_loop; /* MICROVM_LOOP_EMBEDDER: no event thread */
	bool vsock_enabled;
	uint64_t vsock_cid;
	char *vsock_uds_path; /* owned; NULL = no Unix socket bridge */
};

/* Logging and the last error (lib/log.c, lib/error.c). */
struct vm_diag {
	microvm_log_fn log_fn;
	void *log_opaque;
	int log_level;
	/* The last failure's detail: written by vm_error(), read through
	 * vm_error_text() or microvm_last_error(), always under @err_lock
	 * (a leaf lock, held only to copy the text). */
	pthread_mutex_t err_lock;
	char last_error[512];
};

/* The life cycle state and the vCPU threads' synchronisation (lib/vm.c,
 * lib/vcpu.c): everything here is under @lock except @requests. */
struct vm_run {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;               /* MICROVM_STATE_* */
	int event_fd;            /* readable on state changes */
	struct vcpu *vcpus;
	uint32_t vcpus_created;
	atomic_uint requests;    /* REQ_* (atomic) */
	uint32_t vcpus_parked;
	uint32_t vcpus_exited;
	uint32_t vcpus_running;  /* threads started */
	bool gate_open;          /* all vCPU threads exist: run */
	microvm_exit exit_info;
	bool exit_set;
};

/* The KVM machine: fds, guest RAM, the buses exits are dispatched on. */
struct vm_machine {
	int kvm_fd;
	int vm_fd;
	int run_size;
	struct arch_known known; /* what loading state learnt about KVM */
	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
};

/* Snapshot bookkeeping (lib/snapshot/). */
struct vm_snap {
	bool dirty_tracking;   /* memslots log dirty pages (KVM) + vmm bitmap */
	char *base;            /* absolute path of the last snapshot taken or
				* restored from: the base of a diff snapshot */
	uint32_t base_crc;     /* its state file's checksum */
	/* microvm_reset() (lib/snapshot/reset.c): the state tree of the
	 * reset target, the full snapshot whose memory file RAM maps
	 * privately (NULL = none); its directory (absolute); /proc/self/pagemap
	 * once a reset opened it (-1 before). */
	void *reset_state;
	size_t reset_len;
	char *reset_dir;
	bool reset_remap;      /* RAM is not yet a mapping of the target's
				* memory file (it took the snapshot): the
				* first reset maps it */
	int pagemap_fd;
};

/* The devices (lib/vm_devices.c) and what they see of the VM. */
struct vm_devices {
	struct evloop evloop;  /* device work; runs while the VM is started */
	struct dev_host host;  /* what devices see of this VM (vm_host.c) */
	struct virtio_device *virtio[VIRTIO_MMIO_MAX_DEVICES];
	uint32_t nr_virtio;
	/* Added by microvm_start at most once (kept if a start fails), freed
	 * with their virtio_device. */
	struct virtio_console *vconsole;
	struct virtio_rng *vrng;
	struct virtio_vsock *vsock;
	struct arch_platform *platform; /* the arch's platform devices */
};

struct microvm {
	/* Serialises public API calls on this VM (held for the whole call,
	 * except microvm_wait which only uses run.lock). */
	pthread_mutex_t api_lock;
	struct vm_config cfg;
	struct vm_diag diag;
	struct vm_run run;
	struct vm_machine kvm;
	struct vm_snap snap;
	struct vm_devices dev;
	struct vm_seccomp sec; /* microvm_set_seccomp (lib/vm_seccomp.c) */
};

/* error.c: record "detail" for microvm_last_error() and return @err. Any
 * thread, any lock held. */
int vm_error(struct microvm *vm, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* error.c: copy the last recorded detail into @buf (@len bytes). */
void vm_error_text(const struct microvm *vm, char *buf, size_t len);

/* log.c */
void vm_log(const struct microvm *vm, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define vm_debug(vm, ...) vm_log(vm, MICROVM_LOG_DEBUG, __VA_ARGS__)
#define vm_info(vm, ...) vm_log(vm, MICROVM_LOG_INFO, __VA_ARGS__)
#define vm_warn(vm, ...) vm_log(vm, MICROVM_LOG_WARN, __VA_ARGS__)

/* vm.c: called from any thread (vCPU threads, devices) to end the VM with
 * @reason. The first reason recorded wins. */
void vm_request_exit(struct microvm *vm, uint32_t reason, int error, uint32_t vcpu,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* vm.c: lock the API and check the VM is CONFIGURED. 0 with vm->api_lock
 * held, or a negative errno (message recorded) without it. */
int vm_lock_configured(struct microvm *vm, const char *what);

/* vm_host.c: fill vm->host. */
void vm_host_init(struct microvm *vm);

/* vm.c: tell poll/epoll users that the state changed. */
void vm_notify(struct microvm *vm);

/* vm.c: steps of the start sequence. Each returns 0 or a negative errno
 * (message recorded). */
int vm_kvm_open(struct microvm *vm);
int vm_kvm_create(struct microvm *vm); /* VM fd, RAM (vm->mem if mapped), arch init */
int vm_devices_start(struct microvm *vm);
int vm_threads_start(struct microvm *vm, bool paused);
/* (Re)register the RAM memslots, with KVM dirty logging if
 * vm->dirty_tracking. */
int vm_memslots_set(struct microvm *vm);
/* Undo a failed start: everything built is released, the VM is CONFIGURED. */
void vm_start_rollback(struct microvm *vm);

/*
 * The one start sequence, used by microvm_start() (boot a kernel) and
 * microvm_restore() (load a snapshot), with vm->api_lock held on a
 * CONFIGURED VM whose RAM may already be mapped (restore): open KVM, create
 * the VM (RAM, arch init), load_vm, add the configured devices, load_guest,
 * create the vCPUs (load_vcpu each), start the devices, load_devices, start
 * the vCPU threads (parked if @paused). Hooks return 0 or a negative errno
 * with the message recorded (vm_error). On failure everything is rolled
 * back and the VM is CONFIGURED again.
 */
struct vm_start_ops {
	int (*load_vm)(void *ctx, struct microvm *vm);          /* optional */
	int (*load_guest)(void *ctx, struct microvm *vm);       /* optional */
	int (*load_vcpu)(void *ctx, struct microvm *vm, uint32_t index);
	int (*load_devices)(void *ctx, struct microvm *vm);     /* optional */
	bool paused;
};
int vm_start_with(struct microvm *vm, const struct vm_start_ops *ops, void *ctx);
/* With REQ_PAUSE set and vm->lock held: wait until every started vCPU is
 * parked. False if the VM is stopping (or a vCPU already left) instead. The
 * one wait used by pause and snapshot. */
bool vm_wait_parked(struct microvm *vm);
/* Wait on vm->cond (vm->lock held), re-kicking vCPUs every 20 ms. */
void vm_wait_or_rekick(struct microvm *vm);

/* Internal, for the library's own tests: register an MMIO device on a
 * CONFIGURED VM. Not exported from the shared library. */
int microvm__add_mmio(struct microvm *vm, uint64_t base, uint64_t len,
		      const struct bus_ops *ops, void *opaque, const char *name);

#endif
