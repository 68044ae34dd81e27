/*
 * The VM's virtio devices: the one table of device kinds (lib/vm_devices.c),
 * each row a kind's transport ops plus how the VM creates one (at start from
 * its configuration, or on restore from its saved node), and the one way to
 * put a device on the VM (slot, registers, interrupt).
 */
#ifndef MICROVM_VM_DEVICES_H
#define MICROVM_VM_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

struct microvm;
struct virtio_device;
struct virtio_device_ops;

/*
 * Add a virtio device to a CONFIGURED VM: the next slot's registers
 * (arch_virtio_mmio_base) and interrupt (arch_virtio_gsi), on the VM's MMIO
 * bus; the guest learns of it when the VM starts. @ops and @opaque (the
 * device, released through ops->release with the VM) are borrowed from then
 * on. 0 or negative errno (message recorded; @opaque not taken).
 */
int vm_virtio_add(struct microvm *vm, const struct virtio_device_ops *ops, void *opaque,
		  struct virtio_device **out);

/*
 * microvm_start(), before the guest is loaded (the devices must exist when
 * the firmware tables are built), with vm->api_lock held and the VM
 * CONFIGURED: every kind's start_add, in table order (console, rng, vsock
 * after the disks their setter added). 0 or negative errno (message
 * recorded).
 */
int virtio_devices_add(struct microvm *vm);

/*
 * Restore: add the device saved in virtio node @node (device-id plus its
 * "device" subnode) to a CONFIGURED @vm, through its kind's restore_add
 * with the caller's overrides @cfg. 0 or negative errno with a message in
 * @err.
 */
int virtio_restore_add(struct microvm *vm, const void *fdt, int node,
		       const microvm_restore_config *cfg, char *err, size_t errlen);

/* The VM stopped (its last vCPU thread, before it ends): every virtio
 * device's vm_stopped. */
void vm_devices_stopped(struct microvm *vm);

/* Restore: every kind's check of the caller's overrides in @cfg. 0 or
 * -EINVAL with a message in @err. */
int virtio_check_overrides(const microvm_restore_config *cfg, char *err, size_t errlen);

#endif
