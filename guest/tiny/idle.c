/* Prints "idle: ready", then sleeps with interrupts on (hlt) until COM1
 * receives input, answering each line "L" with "idle: L": a VM that costs
 * no CPU while it waits (tests/kvm/test_density.c runs thousands). The
 * UART's receive interrupt (IRQ 4) comes through the IOAPIC. */
#include "tiny.h"

#define LAPIC 0xfee00000ULL
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_TPR 0x80
#define IOAPIC 0xfec00000ULL
#define COM1 0x3f8
#define COM1_PIN 4
#define VECTOR 0x41

struct idt_entry {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct interrupt_frame;

static struct idt_entry idt[256] __attribute__((aligned(16)));

__attribute__((interrupt)) static void on_irq(struct interrupt_frame *f)
{
	(void)f;
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC, reg);
	mmio_write32(IOAPIC + 0x10, v);
}

static void setup_irq(void)
{
	uint64_t h = (uint64_t)(uintptr_t)on_irq;
	idt[VECTOR] = (struct idt_entry){ (uint16_t)h, 0x10, 0, 0x8e, (uint16_t)(h >> 16),
					  (uint32_t)(h >> 32), 0 };
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
	/* IRQ 4 also reaches the 8259 PIC (virtual-wire mode, vector base
	 * never programmed): mask it, the IOAPIC delivers. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	mmio_write32(LAPIC + LAPIC_TPR, 0);
	mmio_write32(LAPIC + LAPIC_SVR, 0x100 | 0xff);
	/* Pin 4: our vector, fixed, physical destination APIC 0, edge, high. */
	ioapic_write(0x10 + 2 * COM1_PIN + 1, 0);
	ioapic_write(0x10 + 2 * COM1_PIN, VECTOR);
	outb(COM1 + 1, 0x01); /* IER: received data available */
}

void main(void *boot_params)
{
	(void)boot_params;
	char line[128];
	unsigned len = 0;
	setup_irq();
	tiny_puts("idle: ready\n");
	for (;;) {
		while (inb(COM1 + 5) & 1) {
			char c = (char)inb(COM1);
			if (c != '\n' && len + 1 < sizeof(line)) {
				line[len++] = c;
				continue;
			}
			line[len] = 0;
			len = 0;
			tiny_puts("idle: ");
			tiny_puts(line);
			tiny_puts("\n");
		}
		/* sti takes effect after hlt starts: no wake-up is lost */
		__asm__ volatile("sti; hlt; cli" ::: "memory");
	}
}
