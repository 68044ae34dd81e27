/* Freestanding helpers for tiny payloads. */
#ifndef TINY_H
#define TINY_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write64(uint64_t a, uint64_t v) { *(volatile uint64_t *)a = v; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t *)a; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

void tiny_puts(const char *s);
/* Read a line from COM1 (polling) into @line (@size >= 1 bytes, NUL-ended,
 * without the newline; a longer line is cut). Returns its length. */
unsigned tiny_getline(char *line, unsigned size);
void tiny_puthex(uint64_t v);
void tiny_putdec(uint64_t v);
void tiny_reset(void) __attribute__((noreturn));
void tiny_halt_forever(void) __attribute__((noreturn));
/* Value of "key=N" on the kernel command line, or @def. */
uint64_t tiny_cmdline_num(const void *boot_params, const char *key, uint64_t def);
/* Interrupts through the local APIC (guest/tiny/tiny.c holds the IDT):
 * install @handler (an __attribute__((interrupt)) function) at @vector and
 * enable the local APIC; route IOAPIC pin @pin to @vector (fixed, APIC 0,
 * edge, active high); end an interrupt in its handler. */
struct interrupt_frame;
void tiny_irq_handler(uint8_t vector, void (*handler)(struct interrupt_frame *));
void tiny_ioapic_route(unsigned pin, uint8_t vector);
void tiny_lapic_eoi(void);
void *memcpy(void *d, const void *s, unsigned long n);
void *memset(void *d, int c, unsigned long n);

#endif
