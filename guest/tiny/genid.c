/* Counts interrupts on IOAPIC pin 23 (the GSI of the ACPI Generic Event
 * Device that announces a new VM generation ID), printing "irq N" for each
 * new one after "ready": the reset tests check a restored or reset VM gets
 * that interrupt. Sets up an IDT, the local APIC and the redirection entry
 * itself, then waits with interrupts on. */
#include "tiny.h"

#define LAPIC 0xfee00000ULL
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_TPR 0x80
#define IOAPIC 0xfec00000ULL
#define GED_PIN 23
#define VECTOR 0x40

struct idt_entry {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct interrupt_frame;

static struct idt_entry idt[256] __attribute__((aligned(16)));
static volatile uint64_t irqs;

__attribute__((interrupt)) static void on_irq(struct interrupt_frame *f)
{
	(void)f;
	irqs++;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC, reg);
	mmio_write32(IOAPIC + 0x10, v);
}

void main(void *boot_params)
{
	(void)boot_params;
	uint64_t h = (uint64_t)(uintptr_t)on_irq;
	idt[VECTOR] = (struct idt_entry){ (uint16_t)h, 0x10, 0, 0x8e, (uint16_t)(h >> 16),
					  (uint32_t)(h >> 32), 0 };
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
	mmio_write32(LAPIC + LAPIC_TPR, 0);
	mmio_write32(LAPIC + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious 0xff */
	/* Pin 23: vector 0x40, fixed, physical destination APIC 0, edge, high. */
	ioapic_write(0x10 + 2 * GED_PIN + 1, 0);
	ioapic_write(0x10 + 2 * GED_PIN, VECTOR);
	__asm__ volatile("sti");
	tiny_puts("ready\n");
	uint64_t seen = 0;
	for (;;) {
		uint64_t n = irqs;
		if (n != seen) {
			seen = n;
			tiny_puts("irq ");
			tiny_putdec(n);
			tiny_puts("\n");
		}
		cpu_relax();
	}
}
