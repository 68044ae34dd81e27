#include "vm_devices.h"

#include <errno.h>

#include "arch/arch.h"
#include "errbuf.h"
#include "snapshot/state.h"
#include "virtio/mmio.h"
#include "vm.h"
#include "vm_kinds.h"

/* The device kinds, in the order microvm_start() adds them. */
static const struct vm_kind *const kinds[] = {
	&vm_kind_blk,
	&vm_kind_console,
	&vm_kind_rng,
	&vm_kind_vsock,
	&vm_kind_net,
};
#define NR_KINDS (sizeof(kinds) / sizeof(kinds[0]))

int vm_virtio_add(struct microvm *vm, const struct virtio_device_ops *ops, void *opaque,
		  struct virtio_device **out)
{
	if (vm->dev.nr_virtio >= VIRTIO_MMIO_MAX_DEVICES)
		return vm_error(vm, -ENOSPC, "virtio %s: at most %d virtio devices", ops->name,
				VIRTIO_MMIO_MAX_DEVICES);
	uint32_t index = vm->dev.nr_virtio;
	struct virtio_device *d;
	int r = virtio_mmio_new(&vm->dev.host, ops, opaque, arch_virtio_mmio_base(index),
				arch_virtio_gsi(index), &d);
	if (r < 0)
		return vm_error(vm, r, "virtio %s: %s", ops->name,
				r == -ENOMEM ? "out of memory" : "bad ops table");
	r = bus_register(&vm->kvm.mmio, d->base, VIRTIO_MMIO_SIZE, &virtio_mmio_ops, d, ops->name);
	if (r < 0) {
		uint64_t base = d->base;
		virtio_mmio_discard(d);
		return vm_error(vm, r, "virtio %s: MMIO window 0x%llx taken", ops->name,
				(unsigned long long)base);
	}
	vm->dev.virtio[vm->dev.nr_virtio++] = d;
	if (out)
		*out = d;
	return 0;
}

int virtio_devices_add(struct microvm *vm)
{
	for (size_t i = 0; i < NR_KINDS; i++) {
		int r = kinds[i]->start_add ? kinds[i]->start_add(vm) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

int virtio_check_overrides(const microvm_restore_config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < NR_KINDS; i++) {
		int r = kinds[i]->check_overrides ? kinds[i]->check_overrides(cfg, err, errlen) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

static const struct vm_kind *kind_by_id(uint32_t id)
{
	for (size_t i = 0; i < NR_KINDS; i++)
		if (kinds[i]->ops->device_id == id)
			return kinds[i];
	return NULL;
}

int virtio_restore_add(struct microvm *vm, const void *fdt, int node,
		       const microvm_restore_config *cfg, char *err, size_t errlen)
{
	uint32_t id;
	int r = virtio_mmio_saved_id(fdt, node, &id, err, errlen);
	if (r < 0)
		return r;
	const struct vm_kind *kind = kind_by_id(id);
	if (!kind)
		return errbuf_fail(err, errlen, -EINVAL, "state: unknown virtio device id %u", id);
	int dn = st_sub(fdt, node, "device", err, errlen);
	if (dn < 0)
		return dn;
	uint32_t instance = 0;
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		instance += vm->dev.virtio[i]->ops == kind->ops;
	return kind->restore_add(vm, fdt, dn, cfg, instance, err, errlen);
}

void vm_devices_stopped(struct microvm *vm)
{
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		virtio_mmio_vm_stopped(vm->dev.virtio[i]);
}
