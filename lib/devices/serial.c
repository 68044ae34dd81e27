/*
 * Register model of a 16550A (the subset the Linux 8250 driver and simple
 * polling guests use): THR/RBR, IER, IIR/FCR, LCR (DLAB), MCR, LSR, MSR, SCR.
 * Transmit is immediate, so the line status always reports an empty
 * transmitter.
 */
#include "devices/serial.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "vcpu.h"
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
#define LSR_DR 0x01
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
	s->in_fd = -1;
	s->mcr = 0x08; /* OUT2 */
	s->dll = 0x0c; /* 9600 baud */
}

void serial_destroy(struct serial *s)
{
	pthread_mutex_destroy(&s->lock);
}

#define CONSOLE_POLL_MS 20

/*
 * Write one byte to the console fd, called with s->lock held. The fd is the
 * embedder's and may be full (a pipe nobody drains) or non-blocking, so never
 * block in write(): wait with poll() in short steps, and between steps let
 * the vCPU park for a pause (dropping s->lock, which other vCPUs may be
 * waiting for on their way to their own park point) or give up when the VM
 * is stopping.
 */
static void emit(struct serial *s, uint8_t byte)
{
	while (s->out_fd >= 0 && !(s->mcr & MCR_LOOP)) {
		struct pollfd p = { .fd = s->out_fd, .events = POLLOUT };
		int r = poll(&p, 1, CONSOLE_POLL_MS);
		if (r > 0) {
			if (p.revents & (POLLERR | POLLNVAL))
				return; /* a broken console must not stop the guest */
			ssize_t n = write(s->out_fd, &byte, 1);
			if (n == 1 || n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				return;
		} else if (r < 0 && errno != EINTR) {
			return;
		}
		pthread_mutex_unlock(&s->lock);
		bool go_on = vcpu_yield();
		pthread_mutex_lock(&s->lock);
		if (!go_on)
			return;
	}
}

/*
 * Receive: polled. When the guest looks at the line status (or the receive
 * buffer) and no byte is waiting, take one from the input fd if one is
 * available right now. Receive interrupts are not generated yet, so a guest
 * reads input by polling LSR.DR.
 */
static void rx_fill(struct serial *s)
{
	if (s->rx_full || s->in_fd < 0 || s->in_eof)
		return;
	struct pollfd p = { .fd = s->in_fd, .events = POLLIN };
	if (poll(&p, 1, 0) <= 0)
		return;
	uint8_t b;
	ssize_t n = read(s->in_fd, &b, 1);
	if (n == 1) {
		s->rx = b;
		s->rx_full = true;
	} else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
		s->in_eof = true; /* end of input or a broken fd: stop polling it */
	}
}

static void serial_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct serial *s = opaque;
	uint8_t v = 0;
	pthread_mutex_lock(&s->lock);
	switch (off) {
	case REG_DATA:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
		} else {
			rx_fill(s);
			v = s->rx;
			s->rx_full = false;
		}
		break;
	case REG_IER: v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier; break;
	case REG_IIR: v = IIR_NO_INT | ((s->fcr & 1) ? IIR_FIFO : 0); break;
	case REG_LCR: v = s->lcr; break;
	case REG_MCR: v = s->mcr; break;
	case REG_LSR:
		rx_fill(s);
		v = LSR_THRE | LSR_TEMT | (s->rx_full ? LSR_DR : 0);
		break;
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
