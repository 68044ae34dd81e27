/* The VM generation ID (ACPI VMGENID) from the VM's side: a new ID on every
 * restore, reset and fork. */
#ifndef MICROVM_VM_VMGENID_H
#define MICROVM_VM_VMGENID_H

#include <stdint.h>

struct microvm;

/*
 * Give the guest a new random generation ID and notify it (a Linux guest's
 * vmgenid driver then reseeds its RNG). A no-op for VMs without ACPI. The
 * page is marked written for dirty tracking. @id (16 bytes, may be NULL)
 * receives the new ID. 0 or -errno (message recorded).
 */
int vm_vmgenid_renew(struct microvm *vm, uint8_t *id);

#endif
