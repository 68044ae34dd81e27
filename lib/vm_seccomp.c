/*
 * seccomp on the library's own threads (microvm_set_seccomp).
 *
 * The filters are built with libseccomp once per start, on the API thread,
 * and exported as raw BPF; each vCPU thread and the event-loop thread loads
 * its kind's program with seccomp(SECCOMP_SET_MODE_FILTER) on itself only
 * (no TSYNC), after PR_SET_NO_NEW_PRIVS on itself only: the embedder's
 * threads, and threads it creates later, are never filtered.
 *
 * MICROVM_SECCOMP_ON uses SECCOMP_RET_TRAP. Why TRAP rather than
 * SECCOMP_RET_ERRNO: an EPERM alone would be silent (or, from a path that
 * ignores errors, unnoticed) and would let the VM run on in a state nobody
 * intended; a trap tells us the call number, so the VM stops with a message
 * naming it. The SIGSYS handler is async-signal-safe: it only records the
 * number in the thread's own slot and makes the call return -EPERM; the
 * thread reports it at its next safe point (the vCPU loop before KVM_RUN,
 * the event loop after each batch of handlers), outside any lock, with
 * vm_request_exit(). The handler is process-wide (one per signal): each
 * start of a VM with MICROVM_SECCOMP_ON installs it unless SIGSYS already
 * leads to it, and it passes every SIGSYS that is not a seccomp trap on a
 * library thread to the disposition it replaced (the embedder's handler, or
 * the default action).
 */
#include "vm_seccomp.h"

#include "vm.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/fs.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* siginfo si_code of a seccomp trap (seccomp(2)) */
#endif

/* One allow-list entry: a system call allowed with any arguments. */
struct sc_allow {
	int nr;
	uint8_t kinds; /* bit per SECCOMP_KIND_* */
};

#define VCPU (1u << SECCOMP_KIND_VCPU)
#define EVL (1u << SECCOMP_KIND_EVLOOP)
#define BOTH (VCPU | EVL)

/*
 * Allowed with any arguments. Calls whose arguments matter (ioctl, mmap,
 * mprotect, tgkill, socket) are in add_arg_rules() below. Device code runs
 * on both thread kinds (a guest MMIO write runs the device on its vCPU
 * thread; ioeventfd/backend completions on the event loop), so most entries
 * are for both.
 */
static const struct sc_allow sc_allow_list[] = {
	/* Device I/O on fds the VM already holds: console/serial output,
	 * eventfds (irqfd, ioeventfd, the VM's state eventfd), disk images
	 * (sync backend), stream/TAP/passt network backends, vsock bridges. */
	{ SCMP_SYS(read), BOTH },
	{ SCMP_SYS(write), BOTH },
	{ SCMP_SYS(readv), BOTH },
	{ SCMP_SYS(writev), BOTH },
	{ SCMP_SYS(pread64), BOTH },
	{ SCMP_SYS(pwrite64), BOTH },
	{ SCMP_SYS(preadv), BOTH },
	{ SCMP_SYS(pwritev), BOTH },
	{ SCMP_SYS(preadv2), BOTH },
	{ SCMP_SYS(pwritev2), BOTH },
	{ SCMP_SYS(fsync), BOTH },     /* virtio-blk FLUSH (sync backend) */
	{ SCMP_SYS(fdatasync), BOTH }, /* virtio-blk FLUSH (sync backend) */
	{ SCMP_SYS(fallocate), BOTH }, /* virtio-blk DISCARD / WRITE_ZEROES */
	{ SCMP_SYS(io_uring_enter), BOTH }, /* io_uring disk backend submit/reap */
	{ SCMP_SYS(sendmsg), BOTH },   /* net stream backend, vsock bridge */
	{ SCMP_SYS(recvmsg), BOTH },
	{ SCMP_SYS(sendto), BOTH },    /* send() */
	{ SCMP_SYS(recvfrom), BOTH },  /* recv() */
	{ SCMP_SYS(shutdown), BOTH },  /* vsock SHUTDOWN to the host socket */
	{ SCMP_SYS(getsockopt), BOTH },/* SO_ERROR of a non-blocking connect */
	{ SCMP_SYS(fcntl), BOTH },     /* O_NONBLOCK on accepted sockets */
	{ SCMP_SYS(close), BOTH },     /* closing vsock connections, eventfds */
	{ SCMP_SYS(poll), BOTH },      /* waiting for a console fd to drain */
	{ SCMP_SYS(epoll_ctl), BOTH }, /* evloop_mod: a queue kick (vCPU) or a
					* full socket (event loop) re-arms a fd */
	{ SCMP_SYS(ppoll), BOTH },
	{ SCMP_SYS(getrandom), BOTH }, /* virtio-rng fills the guest's buffers */
	/* Threads and locks: pthread mutexes/conds, kicking vCPUs
	 * (tgkill is below), the SIGSYS handler's return, sleeping. */
	{ SCMP_SYS(futex), BOTH },
	{ SCMP_SYS(rt_sigreturn), BOTH },   /* return from the kick/SIGSYS handlers */
	{ SCMP_SYS(rt_sigprocmask), BOTH }, /* pthread_sigmask */
	{ SCMP_SYS(restart_syscall), BOTH },/* a wait interrupted by a kick */
	{ SCMP_SYS(sched_yield), BOTH },
	{ SCMP_SYS(nanosleep), BOTH },
	{ SCMP_SYS(clock_nanosleep), BOTH },
	{ SCMP_SYS(clock_gettime), BOTH },  /* if the vDSO falls back */
	{ SCMP_SYS(gettid), BOTH },
	{ SCMP_SYS(getpid), BOTH },         /* pthread_kill */
	{ SCMP_SYS(exit), BOTH },           /* the thread's own end */
	{ SCMP_SYS(madvise), BOTH },        /* glibc frees a thread's stack, malloc trims */
	{ SCMP_SYS(munmap), BOTH },         /* malloc */
	{ SCMP_SYS(mremap), BOTH },         /* realloc of large blocks */
	{ SCMP_SYS(brk), BOTH },            /* malloc */
	{ SCMP_SYS(sigaltstack), BOTH },    /* sanitizer runtimes, at thread exit */
	{ SCMP_SYS(sched_getaffinity), BOTH }, /* sanitizer runtimes */
	/* Event loop only. */
	{ SCMP_SYS(epoll_wait), EVL },
	{ SCMP_SYS(epoll_pwait), EVL },
	{ SCMP_SYS(accept4), EVL },         /* vsock: host connects to the bridge */
	{ SCMP_SYS(connect), EVL },         /* vsock: guest connects to uds_path_PORT */
};

/* ioctl request numbers allowed (the first argument is an fd of the VM). */
struct sc_ioctl {
	unsigned long req;
	uint8_t kinds;
};

static const struct sc_ioctl sc_ioctl_list[] = {
	{ KVM_RUN, VCPU },
	{ KVM_GET_REGS, BOTH },     /* describing where a vCPU stopped */
	{ KVM_GET_SREGS, BOTH },
	{ KVM_TRANSLATE, BOTH },
	{ KVM_IRQ_LINE, BOTH },     /* level interrupts (UART, virtio INTx) */
	{ KVM_IRQ_LINE_STATUS, BOTH },
	{ KVM_IRQFD, BOTH },        /* a virtio device going live (DRIVER_OK) */
	{ KVM_IOEVENTFD, BOTH },
	{ BLKDISCARD, BOTH },       /* virtio-blk DISCARD on a block device */
	{ BLKZEROOUT, BOTH },       /* virtio-blk WRITE_ZEROES on a block device */
	{ TUNSETOFFLOAD, BOTH },    /* virtio-net on a TAP going live (DRIVER_OK):
				     * the offloads the driver took */
};

static int add_arg_rules(scmp_filter_ctx ctx, uint32_t kind, int kick_signal)
{
	uint8_t bit = (uint8_t)(1u << kind);
	int r = 0;
	for (size_t i = 0; r == 0 && i < sizeof(sc_ioctl_list) / sizeof(sc_ioctl_list[0]); i++)
		if (sc_ioctl_list[i].kinds & bit)
			/* the request is an unsigned int: compare its low 32 bits */
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu,
						     sc_ioctl_list[i].req));
	/* malloc may map memory, never executable memory */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* kicking vCPUs (vm_request_exit from any library thread), with the
	 * VM's kick signal only */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				     SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)kick_signal, 0));
	/* vsock bridge: the guest connects to a Unix socket on the host */
	if (r == 0 && kind == SECCOMP_KIND_EVLOOP)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
				     SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0));
	return r;
}

static int add_rules(scmp_filter_ctx ctx, const struct vm_seccomp *sec, uint32_t kind,
		     int kick_signal)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < sizeof(sc_allow_list) / sizeof(sc_allow_list[0]); i++)
		if (sc_allow_list[i].kinds & (1u << kind))
			r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, sc_allow_list[i].nr, 0);
	for (uint32_t i = 0; r == 0 && i < sec->n_extra; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, sec->extra[i], 0);
	return r == 0 ? add_arg_rules(ctx, kind, kick_signal) : r;
}

static uint32_t default_action(uint32_t mode)
{
	switch (mode) {
	case MICROVM_SECCOMP_KILL_PROCESS: return SCMP_ACT_KILL_PROCESS;
	case MICROVM_SECCOMP_LOG: return SCMP_ACT_LOG;
	default: return SCMP_ACT_TRAP;
	}
}

/* Export @ctx's BPF into one allocation: struct sock_fprog + instructions. */
static int export_prog(scmp_filter_ctx ctx, void **out)
{
	int fd = memfd_create("microvm-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = seccomp_export_bpf(ctx, fd);
	off_t len = r == 0 ? lseek(fd, 0, SEEK_END) : -1;
	struct sock_fprog *p = NULL;
	if (r == 0 && (len <= 0 || len % (off_t)sizeof(struct sock_filter) || len > 65536))
		r = -EINVAL;
	if (r == 0 && !(p = malloc(sizeof(*p) + (size_t)len)))
		r = -ENOMEM;
	if (r == 0) {
		p->len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
		p->filter = (struct sock_filter *)(p + 1);
		if (pread(fd, p->filter, (size_t)len, 0) != len)
			r = -EIO;
	}
	close(fd);
	if (r < 0)
		free(p);
	else
		*out = p;
	return r;
}

static int build_prog(struct microvm *vm, uint32_t kind)
{
	scmp_filter_ctx ctx = seccomp_init(default_action(vm->sec.mode));
	if (!ctx)
		return -ENOMEM;
	int r = add_rules(ctx, &vm->sec, kind, vm->cfg.kick_signal);
	if (r == 0)
		r = export_prog(ctx, &vm->sec.prog[kind]);
	seccomp_release(ctx);
	return r;
}

/* ------------------------------------------------------------ SIGSYS */

/* This thread's seccomp slot. */
struct sc_thread {
	bool filtered; /* a filter of ours is on this thread */
	struct microvm *vm; /* whose work runs now (NULL: none) */
	uint32_t kind;
	uint32_t vcpu;
	volatile sig_atomic_t trapped; /* system call number + 1, 0 = none */
	bool reported;
};

static __thread struct sc_thread sc_self;

/* The disposition the handler replaced (process-wide by nature: there is
 * one SIGSYS disposition per process), under sc_handler_lock. */
static struct sigaction sc_old_action;
static pthread_mutex_t sc_handler_lock = PTHREAD_MUTEX_INITIALIZER;

static void sigsys_handler(int signo, siginfo_t *info, void *uctx)
{
	struct sc_thread *t = &sc_self;
	if (t->filtered && info->si_code == SYS_SECCOMP) {
		if (!t->trapped)
			t->trapped = info->si_syscall + 1;
		/* the call is not executed: make it fail with EPERM */
		((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RAX] = -EPERM;
		return;
	}
	if (sc_old_action.sa_flags & SA_SIGINFO) {
		sc_old_action.sa_sigaction(signo, info, uctx);
	} else if (sc_old_action.sa_handler == SIG_DFL) {
		/* what would have happened without us: the default action
		 * (core dump) once this handler returns and unblocks it */
		signal(SIGSYS, SIG_DFL);
		raise(SIGSYS);
	} else if (sc_old_action.sa_handler != SIG_IGN) {
		sc_old_action.sa_handler(signo);
	}
}

/* (Re)install the handler if SIGSYS does not lead to it now (first VM, or
 * the application replaced it since), keeping what it replaces to pass
 * other SIGSYS on to. */
static int install_handler(void)
{
	struct sigaction cur, sa;
	int r = 0;
	pthread_mutex_lock(&sc_handler_lock);
	if (sigaction(SIGSYS, NULL, &cur) < 0)
		r = -errno;
	else if (!(cur.sa_flags & SA_SIGINFO) || cur.sa_sigaction != sigsys_handler) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = sigsys_handler;
		sa.sa_flags = SA_SIGINFO;
		sigemptyset(&sa.sa_mask);
		sc_old_action = cur;
		if (sigaction(SIGSYS, &sa, NULL) < 0)
			r = -errno;
	}
	pthread_mutex_unlock(&sc_handler_lock);
	return r;
}

/* ------------------------------------------------------------ API */

int vm_seccomp_prepare(struct microvm *vm)
{
	vm_seccomp_release(vm);
	if (vm->sec.mode == MICROVM_SECCOMP_OFF)
		return 0;
	if (vm->sec.mode == MICROVM_SECCOMP_ON) {
		int r = install_handler();
		if (r < 0)
			return vm_error(vm, r, "seccomp: installing the SIGSYS handler: %s",
					strerror(-r));
	}
	for (uint32_t k = 0; k < SECCOMP_KINDS; k++) {
		int r = build_prog(vm, k);
		if (r < 0) {
			vm_seccomp_release(vm);
			return vm_error(vm, r, "seccomp: building the %s filter: %s",
					k == SECCOMP_KIND_VCPU ? "vCPU" : "event-loop", strerror(-r));
		}
	}
	return 0;
}

void vm_seccomp_release(struct microvm *vm)
{
	for (uint32_t k = 0; k < SECCOMP_KINDS; k++) {
		free(vm->sec.prog[k]);
		vm->sec.prog[k] = NULL;
	}
}

static const char *kind_name(uint32_t kind)
{
	return kind == SECCOMP_KIND_VCPU ? "vCPU" : "event-loop";
}

/* Install @prog on this thread. */
static int install_here(const void *prog, uint32_t kind, uint32_t vcpu)
{
	/* A trap with SIGSYS blocked would kill the process: unblock it. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	sc_self = (struct sc_thread){ .filtered = true, .kind = kind, .vcpu = vcpu };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) < 0) {
		sc_self.filtered = false;
		return -errno;
	}
	return 0;
}

int vm_seccomp_enter(struct microvm *vm, int kind, uint32_t vcpu)
{
	if (vm->sec.mode == MICROVM_SECCOMP_OFF || !vm->sec.prog[kind])
		return 0;
	int e = install_here(vm->sec.prog[kind], (uint32_t)kind, vcpu);
	if (e < 0) {
		vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, e, vcpu,
				"seccomp: installing the %s thread's filter: %s", kind_name(kind),
				strerror(-e));
		return e;
	}
	sc_self.vm = vm;
	return 0;
}

static int install_evloop(const void *prog)
{
	return install_here(prog, SECCOMP_KIND_EVLOOP, UINT32_MAX);
}

bool vm_seccomp_evloop_filter(const struct microvm *vm, struct evloop_filter *f)
{
	const struct sock_fprog *p = vm->sec.prog[SECCOMP_KIND_EVLOOP];
	if (vm->sec.mode == MICROVM_SECCOMP_OFF || !p)
		return false;
	*f = (struct evloop_filter){ .key = p->filter,
				     .key_len = p->len * sizeof(struct sock_filter),
				     .install = install_evloop,
				     .arg = p };
	return true;
}

void vm_seccomp_work_begin(void *vm)
{
	sc_self.vm = vm;
	sc_self.trapped = 0;
	sc_self.reported = false;
}

void vm_seccomp_work_end(void *vm)
{
	(void)vm;
	vm_seccomp_check();
	sc_self.vm = NULL;
}

bool vm_seccomp_check(void)
{
	struct sc_thread *t = &sc_self;
	if (!t->vm || !t->trapped || t->reported)
		return false;
	t->reported = true;
	int nr = t->trapped - 1;
	char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	char who[32];
	if (t->kind == SECCOMP_KIND_VCPU)
		snprintf(who, sizeof(who), "vCPU %u", t->vcpu);
	else
		snprintf(who, sizeof(who), "event-loop");
	vm_request_exit(t->vm, MICROVM_EXIT_INTERNAL_ERROR, -EPERM,
			t->kind == SECCOMP_KIND_VCPU ? t->vcpu : UINT32_MAX,
			"seccomp: the %s thread made a forbidden system call: %s (%d)", who,
			name ? name : "?", nr);
	free(name);
	return true;
}
