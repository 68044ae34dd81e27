/*
 * Register model of a 16550A (the subset the Linux 8250 driver and simple
 * polling guests use): THR/RBR, IER, IIR/FCR, LCR (DLAB), MCR, LSR, MSR, SCR.
 * Transmit is immediate, so the line status always reports an empty
 * transmitter.
 */
#include "devices/serial.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "vm.h"

enum {
	REG_DATA = 0, /* THR/RBR, DLL when DLAB */
	REG_IER = 1,  /* DLM when DLAB */
	REG_IIR = 2,  /* FCR on write */
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,
};

#define LCR_DLAB 0x80
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NO_INT 0x01
#define IIR_FIFO 0xc0
#define MCR_LOOP 0x10
#define MSR_DCD 0x80
#define MSR_DSR 0x20
#define MSR_CTS 0x10

void serial_init(struct serial *s, struct microvm *vm, int out_fd)
{
	memset(s, 0, sizeof(*s));
	s->vm = vm;
	pthread_mutex_init(&s->lock, NULL);
	s->out_fd = out_fd;
	s->mcr = 0x08; /* OUT2 */
	s->dll = 0x0c; /* 9600 baud */
}

void serial_destroy(struct serial *s)
{
	pthread_mutex_destroy(&s->lock);
}

static void emit(struct serial *s, uint8_t byte)
{
	if (s->out_fd < 0 || (s->mcr & MCR_LOOP))
		return;
	for (;;) {
		ssize_t n = write(s->out_fd, &byte, 1);
		if (n == 1 || (n < 0 && errno != EINTR))
			return; /* a broken console must not stop the guest */
		/* Interrupted by a kick: give up if the VM is stopping, so a
		 * console nobody drains cannot keep a vCPU from stopping. */
		if (atomic_load(&s->vm->requests) & REQ_STOP)
			return;
	}
}

static void serial_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct serial *s = opaque;
	uint8_t v = 0;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case REG_DATA: v = (s->lcr & LCR_DLAB) ? s->dll : 0; break;
	case REG_IER: v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier; break;
	case REG_IIR: v = IIR_NO_INT | ((s->fcr & 1) ? IIR_FIFO : 0); break;
	case REG_LCR: v = s->lcr; break;
	case REG_MCR: v = s->mcr; break;
	case REG_LSR: v = LSR_THRE | LSR_TEMT; break;
	case REG_MSR: v = (s->mcr & MCR_LOOP) ? 0 : (MSR_DCD | MSR_DSR | MSR_CTS); break;
	case REG_SCR: v = s->scr; break;
	}
	pthread_mutex_unlock(&s->lock);
	memset(data, 0, len);
	*(uint8_t *)data = v;
}

static void serial_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct serial *s = opaque;
	uint8_t v = *(const uint8_t *)data;
	(void)len;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case REG_DATA:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			emit(s, v);
		break;
	case REG_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = v;
		else
			s->ier = v & 0x0f;
		break;
	case REG_IIR: s->fcr = v; break;
	case REG_LCR: s->lcr = v; break;
	case REG_MCR: s->mcr = v & 0x1f; break;
	case REG_SCR: s->scr = v; break;
	default: break; /* LSR/MSR are read-only */
	}
	pthread_mutex_unlock(&s->lock);
}

const struct bus_ops serial_ops = { serial_read, serial_write };
