/* The VM's side of the device host interface (lib/devices/host.h). */
#include "vm.h"
#include "vcpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

static void host_log_cb(void *ctx, int level, const char *msg)
{
	vm_log(ctx, level, "%s", msg);
}

static void host_exit_cb(void *ctx, uint32_t reason, const char *msg)
{
	vm_request_exit(ctx, reason, 0, UINT32_MAX, "%s", msg);
}

static bool host_stopped_cb(void *ctx)
{
	return microvm_state(ctx) == MICROVM_STATE_STOPPED;
}

static bool host_yield_cb(void *ctx)
{
	(void)ctx;
	return vcpu_yield();
}

static int host_irq_line_cb(void *ctx, uint32_t gsi, int level)
{
	struct microvm *vm = ctx;
	if (vm->kvm.vm_fd < 0)
		return 0;
	struct kvm_irq_level l = { .irq = gsi, .level = level ? 1 : 0 };
	return ioctl(vm->kvm.vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

static int host_irqfd_cb(void *ctx, int fd, uint32_t gsi)
{
	struct microvm *vm = ctx;
	struct kvm_irqfd irqfd = { .fd = (uint32_t)fd, .gsi = gsi };
	return ioctl(vm->kvm.vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

static int host_ioeventfd_cb(void *ctx, int fd, uint64_t addr, uint32_t len, uint64_t datamatch)
{
	struct microvm *vm = ctx;
	struct kvm_ioeventfd io = {
		.datamatch = datamatch,
		.addr = addr,
		.len = len,
		.fd = fd,
		.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
	};
	return ioctl(vm->kvm.vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

void vm_host_init(struct microvm *vm)
{
	vm->dev.host = (struct dev_host){
		.mem = &vm->kvm.mem,
		.loop = &vm->dev.evloop,
		.ctx = vm,
		.log = host_log_cb,
		.exit = host_exit_cb,
		.stopped = host_stopped_cb,
		.yield = host_yield_cb,
		.irq_line = host_irq_line_cb,
		.irqfd = host_irqfd_cb,
		.ioeventfd = host_ioeventfd_cb,
	};
}
