/* Disks: microvm_add_disk() and microvm_disk_backend(), and the disk row of
 * the device table (lib/vm_kinds.h). The device is lib/virtio/blk.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "abi.h"
#include "errbuf.h"
#include "virtio/blk.h"
#include "virtio/mmio.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_kinds.h"

static bool is_disk(const struct virtio_device *d)
{
	return d->ops == &virtio_blk_ops;
}

static uint32_t count_disks(const struct microvm *vm)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		n += is_disk(vm->dev.virtio[i]);
	return n;
}

#define KNOWN_DISK_FLAGS (MICROVM_DISK_READ_ONLY | MICROVM_DISK_BACKEND_SYNC)

static int add_disk_locked(struct microvm *vm, const microvm_disk_config *ucfg)
{
	microvm_disk_config cfg;
	char err[512];
	int r = abi_copy_in(&cfg, sizeof(cfg), ucfg, ABI_DISK_CONFIG_MIN,
			    "add_disk: microvm_disk_config", err, sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "%s", err);
	if (cfg.flags & ~KNOWN_DISK_FLAGS)
		return vm_error(vm, -EINVAL, "add_disk: %s: unknown flags 0x%x",
				cfg.path ? cfg.path : "(null)", cfg.flags & ~KNOWN_DISK_FLAGS);
	if (!cfg.path)
		return vm_error(vm, -EINVAL, "add_disk: path is NULL");
	if (vm->dev.nr_virtio >= VIRTIO_MMIO_MAX_DEVICES)
		return vm_error(vm, -ENOSPC, "add_disk: %s: at most %d virtio devices", cfg.path,
				VIRTIO_MMIO_MAX_DEVICES);
	struct virtio_blk *b;
	r = blk_open(&vm->dev.host, cfg.path, cfg.flags, cfg.serial, &b, err, sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "add_disk: %s", err);
	uint32_t index = count_disks(vm);
	struct virtio_device *vdev = NULL;
	r = vm_virtio_add(vm, &virtio_blk_ops, b, &vdev);
	if (r < 0) {
		vm_error_text(vm, err, sizeof(err));
		blk_free(b);
		return vm_error(vm, r, "add_disk: %s: %s", cfg.path, err);
	}
	vdev->features = blk_features(b); /* VIRTIO_BLK_F_RO instead of the write ones */
	vm_info(vm, "disk %u: %s, %llu sectors%s, %s backend", index, cfg.path,
		(unsigned long long)blk_capacity(b),
		(cfg.flags & MICROVM_DISK_READ_ONLY) ? ", read-only" : "", blk_backend_name(b));
	return (int)index;
}

MICROVM_API int microvm_add_disk(microvm *vm, const microvm_disk_config *cfg)
{
	int r = vm_lock_configured(vm, "add_disk");
	if (r < 0)
		return r;
	r = add_disk_locked(vm, cfg);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API const char *microvm_disk_backend(const microvm *vm, uint32_t index)
{
	if (!vm)
		return NULL;
	struct microvm *m = (struct microvm *)vm;
	const char *name = NULL;
	pthread_mutex_lock(&m->api_lock);
	uint32_t k = 0;
	for (uint32_t i = 0; i < m->dev.nr_virtio && !name; i++) {
		if (!is_disk(m->dev.virtio[i]))
			continue;
		if (k++ == index)
			name = blk_backend_name(m->dev.virtio[i]->opaque);
	}
	pthread_mutex_unlock(&m->api_lock);
	return name;
}

/* Restore: the disk as saved, or at the caller's path for this clone. */
static int disk_restore_add(struct microvm *vm, const void *fdt, int node,
			    const microvm_restore_config *cfg, uint32_t instance, char *err,
			    size_t errlen)
{
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	int r = blk_config_from_state(fdt, node, &dc, serial, err, errlen);
	if (r < 0)
		return r;
	if (instance < cfg->n_disks && cfg->disk_paths && cfg->disk_paths[instance])
		dc.path = cfg->disk_paths[instance];
	if (!dc.path)
		return errbuf_fail(err, errlen, -EINVAL, "state: disk %u has no path", instance);
	r = microvm_add_disk(vm, &dc);
	return r < 0 ? errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm)) : 0;
}

static int disk_check_overrides(const microvm_restore_config *cfg, char *err, size_t errlen)
{
	if (cfg->n_disks > MICROVM_RESTORE_MAX_DISKS)
		return errbuf_fail(err, errlen, -EINVAL, "restore: %u disk paths, at most %d",
				   cfg->n_disks, MICROVM_RESTORE_MAX_DISKS);
	return 0;
}

const struct vm_kind vm_kind_blk = {
	.ops = &virtio_blk_ops,
	.restore_add = disk_restore_add,
	.check_overrides = disk_check_overrides,
};
