/* The VM generation ID from the VM's side (see vm_vmgenid.h; the ID's
 * place and the notification are the architecture's). */
#include "vm_vmgenid.h"

#include "arch/arch.h"
#include "vm.h"

int vm_vmgenid_renew(struct microvm *vm, uint8_t *id)
{
	if (vm->cfg.no_acpi || !vm->kvm.mem.host || vm->kvm.vm_fd < 0)
		return 0;
	char err[160];
	uint8_t *where = NULL;
	int r = arch_vmgenid_renew(vm->kvm.vm_fd, &vm->kvm.mem, id, &where, err, sizeof(err));
	if (where)
		gm_mark_dirty(&vm->kvm.mem, where, ARCH_VMGENID_SIZE);
	return r < 0 ? vm_error(vm, r, "%s", err) : 0;
}
