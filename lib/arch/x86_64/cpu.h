/* x86_64 vCPU setup: CPUID, FPU, and the long-mode entry state. */
#ifndef MICROVM_X86_CPU_H
#define MICROVM_X86_CPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvm_cpuid2;

/* KVM_GET_SUPPORTED_CPUID into a malloc'd table. 0 or negative errno. */
int x86_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out);

/*
 * Configure vCPU @index of @count: CPUID from @base (APIC ID and topology
 * adjusted), FPU defaults, and for the boot vCPU (index 0) the 64-bit entry
 * state at @entry with RSI = boot_params. Other vCPUs stay in the
 * wait-for-SIPI state, as on real hardware. 0 or negative errno, with a
 * message naming the failing ioctl in @err (@errlen bytes).
 */
int x86_vcpu_setup(int vcpu_fd, uint32_t index, uint32_t count, const struct kvm_cpuid2 *base,
		   bool tsc_deadline, uint64_t entry, char *err, size_t errlen);

/* Read the vCPU's MSRs @index[0 .. n) (n <= 4) into @data. Returns how
 * many KVM read, in order (0 on error). */
uint32_t x86_msrs_get(int vcpu_fd, uint32_t n, const uint32_t *index, uint64_t *data);

#endif
