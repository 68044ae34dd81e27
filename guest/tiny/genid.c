/* Counts interrupts on IOAPIC pin 23 (the GSI of the ACPI Generic Event
 * Device that announces a new VM generation ID), printing "irq N" for each
 * new one after "ready": the reset tests check a restored or reset VM gets
 * that interrupt. Sets up an IDT, the local APIC and the redirection entry
 * itself, then waits with interrupts on. */
#include "tiny.h"

#define GED_PIN 23
#define VECTOR 0x40

static volatile uint64_t irqs;

__attribute__((interrupt)) static void on_irq(struct interrupt_frame *f)
{
	(void)f;
	irqs++;
	tiny_lapic_eoi();
}

void main(void *boot_params)
{
	(void)boot_params;
	tiny_irq_handler(VECTOR, on_irq);
	tiny_ioapic_route(GED_PIN, VECTOR);
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
