/*
 * microvm_describe(): a plain-text report on a paused or stopped VM's
 * vCPUs (arch_vcpu_report) and virtio devices (virtio_mmio_report), for
 * people chasing a hang or a crash.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "arch/arch.h"
#include "textbuf.h"
#include "virtio/mmio.h"
#include "vm.h"

/* The state, or -EBUSY while a vCPU may run guest code: only a VM paused
 * with every vCPU parked, or stopped with every vCPU thread ended, is still
 * (CONFIGURED passes through, for the caller to refuse). */
static int still_state(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	const struct vm_run *r = &vm->run;
	int s = r->state;
	if ((s == MICROVM_STATE_PAUSED && r->vcpus_parked + r->vcpus_exited != r->vcpus_running) ||
	    (s == MICROVM_STATE_STOPPED && r->vcpus_exited != r->vcpus_running) ||
	    s == MICROVM_STATE_RUNNING)
		s = -EBUSY;
	pthread_mutex_unlock(&vm->run.lock);
	return s;
}

MICROVM_API int microvm_describe(microvm *vm, char *buf, size_t len)
{
	if (!vm || (!buf && len))
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int state = still_state(vm), r = 0;
	if (state == MICROVM_STATE_CONFIGURED || vm->run.vcpus_created == 0)
		r = vm_error(vm, -EINVAL, "describe: the VM was never started");
	else if (state < 0)
		r = vm_error(vm, -EBUSY, "describe: the VM is running; pause it first");
	if (r < 0) {
		pthread_mutex_unlock(&vm->api_lock);
		return r;
	}
	struct textbuf t;
	tb_init(&t, buf, len);
	tb_printf(&t, "%s, %u vCPU(s), %u virtio device(s)\n",
		  state == MICROVM_STATE_PAUSED ? "paused" : "stopped", vm->run.vcpus_created,
		  vm->dev.nr_virtio);
	for (uint32_t i = 0; i < vm->run.vcpus_created; i++) {
		tb_printf(&t, "vcpu%u:", i);
		arch_vcpu_report(vm->run.vcpus[i].fd, "  ", &t);
	}
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		virtio_mmio_report(vm->dev.virtio[i], "", &t);
	pthread_mutex_unlock(&vm->api_lock);
	return t.need > INT32_MAX ? INT32_MAX : (int)t.need;
}
