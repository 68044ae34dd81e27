/*
 * Intel MultiProcessor Specification 1.4 tables: the MP floating pointer
 * structure and the MP configuration table, for guests booted without ACPI
 * (acpi=off, or kernels without CONFIG_ACPI). With ACPI tables present Linux
 * takes the CPU and interrupt topology from the MADT instead.
 *
 * Placement (all inside the range the e820 map marks reserved,
 * [EBDA_START, HIGH_MEMORY_START)):
 *   - floating pointer at EBDA_START (0x9fc00): the first KiB of the EBDA
 *     and the last KiB of base memory (639 KiB), both scanned by Linux;
 *   - configuration table right after it if it ends at or below
 *     MPTABLE_EBDA_END (up to MPTABLE_EBDA_MAX_CPUS vCPUs), else at
 *     MPTABLE_HIGH_ADDR, in the BIOS area above the ACPI tables.
 *
 * Interrupt routing matches KVM's default GSI routing after
 * KVM_CREATE_IRQCHIP (GSI i -> IOAPIC pin i, and PIC pin i for i < 16; the
 * in-kernel PIT raises GSI 0): ISA IRQ i -> IOAPIC pin i for i in 0..15,
 * IRQ0 included (no remapping of the timer to pin 2). The ACPI MADT
 * (acpi.c) is consistent with this and has no interrupt source override.
 */
#ifndef MICROVM_X86_MPTABLE_H
#define MICROVM_X86_MPTABLE_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define MPTABLE_EBDA_END 0xa0000ULL    /* end of the EBDA KiB */
#define MPTABLE_HIGH_ADDR 0xf0000ULL   /* config table when it overflows the EBDA */
#define MPTABLE_HIGH_END 0x100000ULL

/* APIC IDs are 8 bits; 0xff is the broadcast ID and the I/O APIC takes ID
 * ncpus, so at most 254 vCPUs. */
#define MPTABLE_MAX_CPUS 254

#define MPTABLE_APIC_VERSION 0x14   /* local APIC version */
#define MPTABLE_IOAPIC_VERSION 0x11 /* 82093AA-compatible I/O APIC */
#define MPTABLE_LAPIC_ADDR 0xfee00000U
#define MPTABLE_IOAPIC_ADDR 0xfec00000U
#define MPTABLE_ISA_IRQS 16

/* Sizes (bytes) of the structures, MP spec 1.4 chapter 4. */
#define MPF_SIZE 16           /* floating pointer */
#define MPC_HEADER_SIZE 44    /* configuration table header */
#define MPC_CPU_SIZE 20       /* processor entry */
#define MPC_ENTRY_SIZE 8      /* bus, I/O APIC, I/O and local interrupt entries */

/* Bytes of the configuration table for @ncpus processors. */
#define MPTABLE_CONFIG_SIZE(ncpus)                                               \
	(MPC_HEADER_SIZE + (uint64_t)(ncpus) * MPC_CPU_SIZE +                    \
	 (1 /* bus */ + 1 /* I/O APIC */ + MPTABLE_ISA_IRQS + 2 /* LINT0/1 */) * \
		 MPC_ENTRY_SIZE)

/* Largest vCPU count whose configuration table still fits in the EBDA KiB
 * after the floating pointer: 16 + 44 + 20 n + 160 <= 1024  ->  n <= 40. */
#define MPTABLE_EBDA_MAX_CPUS 40

/*
 * Write the MP floating pointer and configuration table for @ncpus vCPUs
 * (APIC IDs 0..ncpus-1, vCPU 0 the BSP). Returns 0, -EINVAL (ncpus == 0, or
 * guest RAM does not cover the table area) or -E2BIG (too many vCPUs), with
 * a message in @err. Nothing is written on error.
 */
int mptable_write(struct guest_mem *mem, uint32_t ncpus, char *err, size_t errlen);

#endif
