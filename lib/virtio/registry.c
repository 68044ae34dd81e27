#include "virtio/registry.h"

#include <errno.h>

#include "errbuf.h"
#include "snapshot/state.h"
#include "virtio/devices.h"
#include "virtio/mmio.h"
#include "vm.h"

static const struct virtio_device_ops *const kinds[] = {
	&virtio_blk_ops,
	&virtio_console_ops,
	&virtio_rng_ops,
	&virtio_vsock_ops,
};

const struct virtio_device_ops *virtio_kind(uint32_t id)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i]->device_id == id)
			return kinds[i];
	return NULL;
}

int virtio_restore_add(struct microvm *vm, const void *fdt, int node,
		       const microvm_restore_config *cfg, char *err, size_t errlen)
{
	uint32_t id;
	int r = st_get_u32(fdt, node, "device-id", &id, err, errlen);
	if (r < 0)
		return r;
	const struct virtio_device_ops *kind = virtio_kind(id);
	if (!kind || !kind->restore_add)
		return errbuf_fail(err, errlen, -EINVAL, "state: unknown virtio device id %u", id);
	int dn = st_sub(fdt, node, "device", err, errlen);
	if (dn < 0)
		return dn;
	uint32_t instance = 0;
	for (uint32_t i = 0; i < vm->nr_virtio; i++)
		instance += vm->virtio[i]->ops == kind;
	return kind->restore_add(vm, fdt, dn, cfg, instance, err, errlen);
}

int virtio_devices_add(struct microvm *vm)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		int r = kinds[i]->start_add ? kinds[i]->start_add(vm) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}
