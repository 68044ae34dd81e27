/*
 * ACPI tables for the guest (ACPI 6.3, chapter 5), hardware-reduced:
 *
 *   RSDP (revision 2) -> XSDT (and a legacy RSDT) -> FADT, MADT
 *                                                    FADT -> DSDT
 *
 * All of them lie in [ACPI_TABLES_START, ACPI_TABLES_END), inside the range
 * the e820 map marks reserved; the RSDP is at ACPI_RSDP_ADDR, 16-byte
 * aligned in [0xe0000, 0x100000), where the legacy scan finds it. The caller
 * should also store its address in boot_params.acpi_rsdp_addr (offset 0x070,
 * ACPI_BOOT_PARAMS_RSDP_OFFSET, 8 bytes).
 *
 * FADT: HW_REDUCED_ACPI, no FACS, no SCI, no PM1/GPE blocks. Power-off goes
 * through the ACPI 5+ sleep control/status registers, one byte each in
 * system I/O space:
 *   ACPI_SLEEP_CONTROL_PORT 0x600   SLP_TYP in bits 2-4, SLP_EN bit 5
 *   ACPI_SLEEP_STATUS_PORT  0x601   WAK_STS bit 7 (Linux writes 1 to clear)
 * 0x600/0x601 lie above the 10-bit ISA range (0x000-0x3ff), so no legacy
 * driver probes them and they cannot alias an ISA device: they are clear of
 * the PIC (0x20/0xa0), PIT (0x40-0x43), i8042 (0x60/0x64), CMOS (0x70/0x71),
 * the 0x80 delay port, VGA (0x3b0-0x3df), the COM ports (0x2e8-0x3ff) and
 * PCI configuration (0xcf8-0xcff).
 * The DSDT defines \_S5_ = Package(){5, 5, 0, 0}, so Linux powers off by
 * writing (ACPI_SLP_TYP_S5 << 2) | ACPI_SLP_EN = 0x34 to the control port.
 *
 * MADT: local APIC 0xfee00000, PCAT_COMPAT, one enabled local APIC per
 * vCPU (ACPI processor UID = APIC ID = vCPU index), one I/O APIC (ID ncpus,
 * 0xfec00000, GSI base 0) and a local APIC NMI on LINT1 for all CPUs. There
 * is deliberately no interrupt source override: KVM's default routing
 * delivers GSI i (the PIT raises GSI 0) on IOAPIC pin i, and the MP table
 * (mptable.h) maps ISA IRQ i to pin i, so identity is the truth for both.
 *
 * In hardware-reduced mode Linux uses no legacy PIC and sets up no ISA IRQs
 * of its own accord, so the DSDT also describes the legacy devices the VMM
 * has, for their IRQs to be mapped: \_SB.COM1 (PNP0501, 0x3f8-0x3ff, IRQ 4)
 * and \_SB.PS2K (PNP0303, ports 0x60 and 0x64, IRQ 1).
 */
#ifndef MICROVM_X86_ACPI_H
#define MICROVM_X86_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define ACPI_TABLES_START 0xe0000ULL
#define ACPI_TABLES_END 0xf0000ULL /* [0xf0000, 0x100000) is left to the MP table */
#define ACPI_RSDP_ADDR ACPI_TABLES_START

/* boot_params.acpi_rsdp_addr (Linux Documentation/arch/x86/zero-page.rst). */
#define ACPI_BOOT_PARAMS_RSDP_OFFSET 0x070

#define ACPI_SLEEP_CONTROL_PORT 0x600
#define ACPI_SLEEP_STATUS_PORT 0x601

/* Sleep control register bits (ACPI 6.3, 4.8.3.7). */
#define ACPI_SLP_TYP_SHIFT 2
#define ACPI_SLP_TYP_MASK 0x1c
#define ACPI_SLP_EN 0x20
/* Sleep status register: wake status (ACPI 6.3, 4.8.3.8). */
#define ACPI_WAK_STS 0x80

/* The SLP_TYP value \_S5_ gives: what a write requesting soft-off carries. */
#define ACPI_SLP_TYP_S5 5

#define ACPI_LAPIC_ADDR 0xfee00000U
#define ACPI_IOAPIC_ADDR 0xfec00000U

/* 8-bit APIC IDs, 0xff reserved, I/O APIC ID = ncpus. */
#define ACPI_MAX_CPUS 254

/*
 * Write RSDP, XSDT, RSDT, FADT, DSDT and MADT for @ncpus vCPUs and store the
 * RSDP's guest-physical address in *@rsdp_addr. Returns 0, -EINVAL (ncpus
 * == 0, or guest RAM does not cover the table area) or -E2BIG (too many
 * vCPUs), with a message in @err. Nothing is written on error.
 */
int acpi_write(struct guest_mem *mem, uint32_t ncpus, uint64_t *rsdp_addr, char *err,
	       size_t errlen);

/* A virtio-mmio device for the DSDT: Device(VRnn) { _HID "LNRO0005",
 * _CRS { Memory32Fixed(base, size), Interrupt(edge, active high) { gsi } } },
 * which Linux's virtio_mmio driver binds through ACPI. */
struct acpi_mmio_device {
	uint64_t base;
	uint32_t size;
	uint32_t gsi;
};
#define ACPI_MAX_MMIO_DEVICES 16

/* acpi_write() plus @n virtio-mmio devices in the DSDT (n <= 16). */
int acpi_write_devices(struct guest_mem *mem, uint32_t ncpus,
		       const struct acpi_mmio_device *devs, uint32_t n, uint64_t *rsdp_addr,
		       char *err, size_t errlen);

/*
 * VM generation ID (Microsoft "Virtual Machine Generation ID", Linux
 * drivers/virt/vmgenid.c): 16 random bytes at ACPI_VMGENID_ADDR (in the
 * reserved area, after the tables), described in the DSDT as
 *   \_SB.VGEN { _HID "LMVM0001", _CID "VM_GEN_COUNTER", _DDN "VM_Gen_Counter",
 *               ADDR = Package(2) { low 32 bits, high 32 bits } }
 * and a Generic Event Device (hardware-reduced ACPI's way to signal events)
 *   \_SB.GED0 { _HID "ACPI0013", _CRS { Interrupt(edge, active high) {gsi} },
 *               Method(_EVT, 1) { Notify(\_SB.VGEN, 0x80) } }
 * The VMM writes a new ID and pulses ACPI_GED_GSI: Linux's GED driver runs
 * _EVT, the Notify reaches the vmgenid driver, which rereads the ID and
 * reseeds the kernel RNG (add_vmfork_randomness). acpi_write_devices()
 * fills the ID with random bytes.
 */
#define ACPI_VMGENID_ADDR 0xef000ULL
#define ACPI_VMGENID_SIZE 16
#define ACPI_VMGENID_HID "LMVM0001"
#define ACPI_GED_GSI 23 /* IOAPIC pin 23: above every virtio-mmio GSI */
/* Fill @id with a new random generation ID (getrandom). */
void acpi_vmgenid_fill(uint8_t id[ACPI_VMGENID_SIZE]);

/* Whether a byte written to the sleep control register requests S5
 * (soft-off): SLP_EN set and SLP_TYP == ACPI_SLP_TYP_S5. */
bool acpi_sleep_write_is_poweroff(uint8_t value);

#endif
