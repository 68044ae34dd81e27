#include "vcpu.h"

#include "arch/arch.h"
#include "vm_devices.h"
#include "vm_seccomp.h"

#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

static __thread struct vcpu *current_vcpu;

uint32_t vcpu_current_index(void)
{
	return current_vcpu ? current_vcpu->index : UINT32_MAX;
}

static void kick_handler(int signo)
{
	(void)signo; /* only here to make KVM_RUN return -EINTR */
}

void vcpu_install_kick_handler(int signo)
{
	struct sigaction old;
	if (sigaction(signo, NULL, &old) < 0)
		return;
	if ((old.sa_flags & SA_SIGINFO) || (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN))
		return; /* the application's own handler; it just has to return */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(signo, &sa, NULL);
}

void vcpu_kick_all(struct microvm *vm)
{
	for (uint32_t i = 0; i < vm->run.vcpus_created; i++) {
		struct vcpu *v = &vm->run.vcpus[i];
		if (!v->thread_started)
			continue;
		/* immediate_exit covers a vCPU about to enter KVM_RUN; the signal
		 * one that is already inside it. */
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (v != current_vcpu)
			pthread_kill(v->thread, vm->cfg.kick_signal);
	}
}

/* Park @v while a pause is requested (and no stop). Counts it as parked. */
static void vcpu_park(struct vcpu *v)
{
	struct microvm *vm = v->vm;
	pthread_mutex_lock(&vm->run.lock);
	vm->run.vcpus_parked++;
	pthread_cond_broadcast(&vm->run.cond);
	while ((atomic_load(&vm->run.requests) & (REQ_PAUSE | REQ_STOP)) == REQ_PAUSE)
		pthread_cond_wait(&vm->run.cond, &vm->run.lock);
	vm->run.vcpus_parked--;
	pthread_mutex_unlock(&vm->run.lock);
}

static bool vcpu_handle_exit(struct vcpu *v);

/*
 * KVM finishes a PIO/MMIO read (copies our data into the guest registers)
 * only on the next KVM_RUN. Before parking, re-enter with immediate_exit set
 * so it does that and returns at once: the saved vCPU state is then
 * complete (a snapshot taken while parked is consistent). An access that
 * needs another exit (split MMIO) is handled and the loop repeats. False if
 * the vCPU must stop.
 */
static bool vcpu_complete_io(struct vcpu *v)
{
	for (int i = 0; v->io_pending && i < 64; i++) {
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		v->io_pending = false;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				return true;
			vm_request_exit(v->vm, MICROVM_EXIT_INTERNAL_ERROR, -errno, v->index,
					"KVM_RUN failed: %s", strerror(errno));
			return false;
		}
		if (!vcpu_handle_exit(v))
			return false;
	}
	return true;
}

/* Handle pending requests before entering KVM_RUN. False = stop. */
static bool vcpu_check_requests(struct vcpu *v)
{
	struct microvm *vm = v->vm;
	for (;;) {
		/* Clear immediate_exit *before* reading the requests: a kicker
		 * sets the request first and immediate_exit second, so either we
		 * see its request or KVM_RUN sees its immediate_exit. */
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		unsigned req = atomic_load(&vm->run.requests);
		if (req == 0)
			return true;
		if (req & REQ_STOP)
			return false;
		if (v->io_pending && !vcpu_complete_io(v))
			return false;
		vcpu_park(v);
	}
}

bool vcpu_yield(void)
{
	struct vcpu *v = current_vcpu;
	if (!v)
		return true;
	unsigned req = atomic_load(&v->vm->run.requests);
	if ((req & (REQ_PAUSE | REQ_STOP)) == REQ_PAUSE)
		vcpu_park(v);
	return !(atomic_load(&v->vm->run.requests) & REQ_STOP);
}

/* Append where the vCPU is (and, if @code, the instruction there). */
static void describe_rip(struct vcpu *v, char *buf, size_t len, bool code)
{
	arch_vcpu_describe(v->fd, &v->vm->kvm.mem, code, buf, len);
}

static void internal_error(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char msg[MICROVM_EXIT_MESSAGE_MAX];
	const char *kind = "";
	switch (run->internal.suberror) {
	case KVM_INTERNAL_ERROR_EMULATION: kind = " (emulation failure)"; break;
	case KVM_INTERNAL_ERROR_SIMUL_EX: kind = " (exception during exception delivery)"; break;
	case KVM_INTERNAL_ERROR_DELIVERY_EV: kind = " (event delivery failed)"; break;
	default: break;
	}
	int n = snprintf(msg, sizeof(msg), "KVM internal error %u%s", run->internal.suberror, kind);
	bool have_insn = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
			 (run->emulation_failure.flags &
			  KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES);
	if (have_insn) {
		uint8_t sz = run->emulation_failure.insn_size;
		if (sz > sizeof(run->emulation_failure.insn_bytes))
			sz = sizeof(run->emulation_failure.insn_bytes);
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, " insn:");
		for (uint8_t i = 0; i < sz && (size_t)n < sizeof(msg); i++)
			n += snprintf(msg + n, sizeof(msg) - (size_t)n, " %02x",
				      run->emulation_failure.insn_bytes[i]);
	} else {
		uint32_t nd = run->internal.ndata;
		if (nd > 16)
			nd = 16;
		for (uint32_t i = 0; i < nd && (size_t)n < sizeof(msg); i++)
			n += snprintf(msg + n, sizeof(msg) - (size_t)n, " data[%u]=0x%llx", i,
				      (unsigned long long)run->internal.data[i]);
	}
	describe_rip(v, msg, sizeof(msg), !have_insn);
	vm_request_exit(v->vm, MICROVM_EXIT_INTERNAL_ERROR, -EIO, v->index, "%s", msg);
}

/* Dispatch one exit. False = this vCPU stops. */
static bool vcpu_handle_exit(struct vcpu *v)
{
	struct microvm *vm = v->vm;
	struct kvm_run *run = v->run;
	char msg[MICROVM_EXIT_MESSAGE_MAX];

	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		v->io_pending = true;
		uint32_t size = run->io.size;
		bool out = run->io.direction == KVM_EXIT_IO_OUT;
		/* data_offset/size/count come from KVM, not the guest, and stay
		 * inside the run page; string I/O repeats count times. */
		for (uint32_t i = 0; i < run->io.count; i++)
			if (!bus_access(&vm->kvm.pio, run->io.port, data + i * size, size, out))
				vm_debug(vm, "vcpu%u: unhandled port %s 0x%x size %u", v->index,
					 out ? "write" : "read", run->io.port, size);
		return true;
	}
	case KVM_EXIT_MMIO: {
		uint32_t len = run->mmio.len;
		v->io_pending = true;
		if (len == 0 || len > sizeof(run->mmio.data))
			len = sizeof(run->mmio.data);
		if (!bus_access(&vm->kvm.mmio, run->mmio.phys_addr, run->mmio.data, len,
				run->mmio.is_write))
			vm_debug(vm, "vcpu%u: unhandled MMIO %s 0x%llx len %u", v->index,
				 run->mmio.is_write ? "write" : "read",
				 (unsigned long long)run->mmio.phys_addr, len);
		return true;
	}
	case KVM_EXIT_HLT:
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		snprintf(msg, sizeof(msg), "guest triple fault (KVM_EXIT_SHUTDOWN)");
		describe_rip(v, msg, sizeof(msg), true);
		vm_request_exit(vm, MICROVM_EXIT_CRASH, 0, v->index, "%s", msg);
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_exit(vm, MICROVM_EXIT_POWEROFF, 0, v->index, "guest powered off");
			break;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_exit(vm, MICROVM_EXIT_RESET, 0, v->index, "guest requested reset");
			break;
		case KVM_SYSTEM_EVENT_CRASH:
			vm_request_exit(vm, MICROVM_EXIT_CRASH, 0, v->index, "guest reported a crash");
			break;
		default:
			vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, -EIO, v->index,
					"unknown KVM system event %u", run->system_event.type);
			break;
		}
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(msg, sizeof(msg), "KVM entry failed: hardware reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		describe_rip(v, msg, sizeof(msg), true);
		vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, -EIO, v->index, "%s", msg);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		internal_error(v);
		return false;
	default:
		snprintf(msg, sizeof(msg), "unhandled KVM exit reason %u", run->exit_reason);
		describe_rip(v, msg, sizeof(msg), true);
		vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, -ENOTSUP, v->index, "%s", msg);
		return false;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct microvm *vm = v->vm;
	current_vcpu = v;

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, vm->cfg.kick_signal);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	/* "vcpu<N>" in ps/top -H and /proc/<pid>/task/<tid>/comm. */
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->index);
	prctl(PR_SET_NAME, name, 0, 0, 0);
	vm_seccomp_enter(vm, SECCOMP_KIND_VCPU, v->index); /* stops the VM on failure */

	pthread_mutex_lock(&vm->run.lock);
	while (!vm->run.gate_open && !(atomic_load(&vm->run.requests) & REQ_STOP))
		pthread_cond_wait(&vm->run.cond, &vm->run.lock);
	pthread_mutex_unlock(&vm->run.lock);

	while (!vm_seccomp_check() && vcpu_check_requests(v)) {
		v->io_pending = false;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, -errno, v->index,
					"KVM_RUN failed: %s", strerror(errno));
			break;
		}
		if (!vcpu_handle_exit(v))
			break;
	}

	pthread_mutex_lock(&vm->run.lock);
	vm->run.vcpus_exited++;
	/* A start that failed (gate never opened) rolls back by itself. */
	bool last = vm->run.vcpus_exited == vm->run.vcpus_running && vm->run.gate_open;
	if (last) {
		if (!vm->run.exit_set) {
			vm->run.exit_info.reason = MICROVM_EXIT_STOPPED;
			snprintf(vm->run.exit_info.message, sizeof(vm->run.exit_info.message),
				 "stopped by the host");
			vm->run.exit_set = true;
		}
		vm->run.state = MICROVM_STATE_STOPPED;
	}
	pthread_cond_broadcast(&vm->run.cond);
	pthread_mutex_unlock(&vm->run.lock);
	if (last) {
		/* Before this thread ends: destroy joins it before it frees
		 * the devices. */
		vm_devices_stopped(vm);
		vm_notify(vm);
	}
	current_vcpu = NULL;
	return NULL;
}
