/* Interrupt lines into the in-kernel irqchip (PIC + IOAPIC). */
#ifndef MICROVM_IRQ_H
#define MICROVM_IRQ_H

#include <stdint.h>

struct microvm;

/* Set GSI @gsi to @level (0/1). No-op before the VM exists. 0 or -errno. */
int irq_set_line(struct microvm *vm, uint32_t gsi, int level);

#endif
