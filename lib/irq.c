#include "irq.h"

#include <errno.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include "vm.h"

int irq_set_line(struct microvm *vm, uint32_t gsi, int level)
{
	if (vm->vm_fd < 0)
		return 0;
	struct kvm_irq_level l = { .irq = gsi, .level = level ? 1 : 0 };
	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}
