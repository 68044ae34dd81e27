/* Guest-physical layout used by the x86_64 direct boot. */
#ifndef MICROVM_X86_LAYOUT_H
#define MICROVM_X86_LAYOUT_H

/* RAM above 3 GiB is placed at 4 GiB, leaving 3-4 GiB for MMIO (virtio,
 * the IOAPIC and LAPIC). */
#define MEM_LOW_LIMIT (3ULL << 30)
#define MEM_HIGH_BASE (4ULL << 30)

/* virtio-mmio devices: BASE + n * 4 KiB, GSI FIRST_GSI + n (8 is taken). */
#define VIRTIO_MMIO_BASE 0xd0000000ULL
#define VIRTIO_MMIO_FIRST_GSI 5
#define RTC_GSI 8
#define VIRTIO_MMIO_GSI_INSTEAD_OF_RTC 21

#define BOOT_GDT_ADDR 0x500ULL
#define BOOT_IDT_ADDR 0x530ULL /* after the 5-entry GDT */
#define BOOT_STACK_TOP 0x8ff0ULL
#define BOOT_PARAMS_ADDR 0x7000ULL
#define BOOT_PML4_ADDR 0x9000ULL
#define BOOT_PDPT_ADDR 0xa000ULL
#define BOOT_PD_ADDR 0xb000ULL /* 4 pages: identity map of 4 GiB, 2 MiB pages */
#define BOOT_CMDLINE_ADDR 0x20000ULL
#define EBDA_START 0x9fc00ULL
#define HIGH_MEMORY_START 0x100000ULL /* kernels load at or above 1 MiB */

/* Segment selectors of the Linux 64-bit boot protocol. */
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define BOOT_TSS 0x20

/* KVM needs these on Intel for real-mode emulation; keep them out of RAM. */
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ULL
#define KVM_TSS_ADDR 0xfeffd000ULL

#endif
