/*
 * x86_64 VM and vCPU state for snapshots: what KVM holds (registers, FPU/
 * XSAVE, MSRs, LAPIC, pending events, irqchip, PIT, clock) saved into and
 * loaded from the snapshot state tree. Raw KVM structures are stored as
 * properties with their sizes checked on load.
 */
#ifndef MICROVM_X86_STATE_H
#define MICROVM_X86_STATE_H

#include <stddef.h>

struct st_writer;

/* Save vCPU @vcpu_fd (not running) into @node. @kvm_fd: an open /dev/kvm.
 * 0 or negative errno with a message in @err. */
int x86_vcpu_save(int kvm_fd, int vcpu_fd, struct st_writer *w, int node, char *err,
		  size_t errlen);
/* Load a vCPU created with KVM_CREATE_VCPU (nothing else set) from @node. */
int x86_vcpu_load(int kvm_fd, int vcpu_fd, const void *fdt, int node, char *err, size_t errlen);

/* The in-kernel irqchip (PICs, IOAPIC), PIT and KVM clock. */
int x86_vm_save(int vm_fd, struct st_writer *w, int node, char *err, size_t errlen);
int x86_vm_load(int vm_fd, const void *fdt, int node, char *err, size_t errlen);

#endif
