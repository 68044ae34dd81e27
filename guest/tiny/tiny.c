#include "tiny.h"

#define COM1 0x3f8

void *memcpy(void *d, const void *s, unsigned long n)
{
	unsigned char *dd = d;
	const unsigned char *ss = s;
	while (n--)
		*dd++ = *ss++;
	return d;
}

void *memset(void *d, int c, unsigned long n)
{
	unsigned char *dd = d;
	while (n--)
		*dd++ = (unsigned char)c;
	return d;
}

void tiny_puts(const char *s)
{
	for (; *s; s++) {
		while (!(inb(COM1 + 5) & 0x20)) /* wait for THR empty */
			cpu_relax();
		outb(COM1, (uint8_t)*s);
	}
}

unsigned tiny_getline(char *line, unsigned size)
{
	unsigned n = 0;
	for (;;) {
		while (!(inb(COM1 + 5) & 0x01)) /* LSR.DR: a byte is waiting */
			cpu_relax();
		char c = (char)inb(COM1);
		if (c == '\n' || n == size - 1)
			break;
		line[n++] = c;
	}
	line[n] = 0;
	return n;
}

void tiny_puthex(uint64_t v)
{
	char buf[19];
	buf[0] = '0';
	buf[1] = 'x';
	for (int i = 0; i < 16; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
	buf[18] = 0;
	tiny_puts(buf);
}

void tiny_putdec(uint64_t v)
{
	char buf[21];
	int i = 20;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	tiny_puts(&buf[i]);
}

void tiny_reset(void)
{
	outb(0x64, 0xfe); /* i8042: pulse the reset line */
	tiny_halt_forever();
}

void tiny_halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

uint64_t tiny_cmdline_num(const void *bp, const char *key, uint64_t def)
{
	const char *cl = (const char *)(uintptr_t)*(const volatile uint32_t *)((const char *)bp + 0x228);
	if (!cl)
		return def;
	for (const char *p = cl; *p; p++) {
		if (p != cl && p[-1] != ' ')
			continue;
		const char *k = key, *q = p;
		while (*k && *q == *k) {
			k++;
			q++;
		}
		if (*k || *q != '=')
			continue;
		uint64_t v = 0;
		for (q++; *q >= '0' && *q <= '9'; q++)
			v = v * 10 + (uint64_t)(*q - '0');
		return v;
	}
	return def;
}

/* ------------------------------------------------------------ interrupts */

#define LAPIC 0xfee00000ULL
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_TPR 0x80
#define IOAPIC 0xfec00000ULL

struct idt_entry {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));

void tiny_irq_handler(uint8_t vector, void (*handler)(struct interrupt_frame *))
{
	uint64_t h = (uint64_t)(uintptr_t)handler;
	idt[vector] = (struct idt_entry){ (uint16_t)h, 0x10, 0, 0x8e, (uint16_t)(h >> 16),
					  (uint32_t)(h >> 32), 0 };
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
	mmio_write32(LAPIC + LAPIC_TPR, 0);
	mmio_write32(LAPIC + LAPIC_SVR, 0x100 | 0xff); /* enabled, spurious 0xff */
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC, reg);
	mmio_write32(IOAPIC + 0x10, v);
}

void tiny_ioapic_route(unsigned pin, uint8_t vector)
{
	ioapic_write(0x10 + 2 * pin + 1, 0);
	ioapic_write(0x10 + 2 * pin, vector);
}

void tiny_lapic_eoi(void)
{
	mmio_write32(LAPIC + LAPIC_EOI, 0);
}
