/*
 * One row per virtio device kind (lib/vm_devices.c's table): the device's
 * transport ops and how a VM creates one. Each kind's row and its public
 * setters live in lib/vm_<kind>.c; the device itself in lib/virtio/<kind>.c.
 */
#ifndef MICROVM_VM_KINDS_H
#define MICROVM_VM_KINDS_H

#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

struct microvm;
struct virtio_device_ops;

struct vm_kind {
	const struct virtio_device_ops *ops;
	/* microvm_start(), before the guest is loaded: add this kind's device
	 * if the VM's configuration asks for one (no-op if an earlier start
	 * attempt added it). NULL for a kind whose setter adds the device
	 * (disks). 0 or negative errno (message recorded). */
	int (*start_add)(struct microvm *vm);
	/* Restore: add the device to a CONFIGURED @vm from its saved "device"
	 * node @node (the whole configuration its save wrote) and the caller's
	 * per-clone overrides @cfg; @instance counts the devices of this kind
	 * before it. 0 or negative errno with a message in @err. */
	int (*restore_add)(struct microvm *vm, const void *fdt, int node,
			   const microvm_restore_config *cfg, uint32_t instance, char *err,
			   size_t errlen);
	/* Restore: check the caller's overrides for this kind before anything
	 * is built. Optional. 0 or -EINVAL with a message in @err. */
	int (*check_overrides)(const microvm_restore_config *cfg, char *err, size_t errlen);
};

extern const struct vm_kind vm_kind_blk, vm_kind_console, vm_kind_rng, vm_kind_vsock,
	vm_kind_net;

#endif
