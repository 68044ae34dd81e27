/*
 * The virtio device kinds, one table row each (lib/virtio/registry.c): the
 * one place that lists them. Restore walks the saved devices through it;
 * microvm_start() adds the devices the configuration asks for.
 */
#ifndef MICROVM_VIRTIO_REGISTRY_H
#define MICROVM_VIRTIO_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

struct microvm;
struct virtio_device_ops;

/* Each device file's ops table (its row). */
extern const struct virtio_device_ops virtio_blk_ops;
extern const struct virtio_device_ops virtio_console_ops;
extern const struct virtio_device_ops virtio_rng_ops;
extern const struct virtio_device_ops virtio_vsock_ops;

/*
 * microvm_start(), before the guest is loaded (the devices must exist when
 * the kernel command line is built), with vm->api_lock held and the VM
 * CONFIGURED: every kind's start_add, in table order (console, rng, vsock
 * after the disks their setter added). 0 or negative errno (message
 * recorded).
 */
int virtio_devices_add(struct microvm *vm);

/* The kind with virtio device ID @id, or NULL. */
const struct virtio_device_ops *virtio_kind(uint32_t id);

/*
 * Restore: add the device saved in virtio node @node (device-id plus its
 * "device" subnode) to a CONFIGURED @vm, through its kind's restore_add with
 * the caller's overrides @cfg. 0 or negative errno with a message in @err.
 */
int virtio_restore_add(struct microvm *vm, const void *fdt, int node,
		       const microvm_restore_config *cfg, char *err, size_t errlen);

#endif
