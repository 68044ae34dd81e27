/*
 * 16550A UART: the registers the Linux 8250 driver and simple polling guests
 * use (THR/RBR, IER, IIR/FCR, LCR with DLAB, MCR, LSR, MSR, SCR), with
 * interrupts on IRQ 4 for received data and transmitter empty.
 *
 * Transmit is immediate (the byte goes to the output fd), so the transmitter
 * is always empty. Receive: the event loop reads the input fd into a 64-byte
 * FIFO and raises the interrupt; when the FIFO is full it stops watching the
 * fd until the guest drains it. An input fd that cannot be polled (a regular
 * file) is read on demand when the guest looks at the line status.
 */
#include "devices/serial.h"
#include "snapshot/state.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bus.h"
#include "devices/host.h"
#include "microvm.h"

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

#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10
#define MSR_DCD 0x80
#define MSR_DSR 0x20
#define MSR_CTS 0x10

#define CONSOLE_POLL_MS 20

void serial_init(void *dev, const struct dev_host *host)
{
	struct serial *s = dev;
	memset(s, 0, sizeof(*s));
	s->host = host;
	pthread_mutex_init(&s->lock, NULL);
	s->out_fd = s->in_fd = -1;
	s->mcr = 0x08; /* OUT2 */
	s->dll = 0x0c; /* 9600 baud */
}

void serial_set_fds(struct serial *s, int in_fd, int out_fd)
{
	s->in_fd = in_fd;
	s->out_fd = out_fd;
}

void serial_destroy(void *dev)
{
	struct serial *s = dev;
	pthread_mutex_destroy(&s->lock);
}

/* Recompute the interrupt line (s->lock held). */
static void update_irq(struct serial *s)
{
	bool level = ((s->ier & IER_RDI) && s->rx_count) || ((s->ier & IER_THRI) && s->thre_pending);
	if (level != s->irq_level) {
		s->irq_level = level;
		host_irq_line(s->host, SERIAL_COM1_IRQ, level);
	}
}

/* Read what fits of the input fd into the FIFO (s->lock held). */
static void rx_read(struct serial *s)
{
	uint8_t buf[SERIAL_RX_FIFO];
	uint32_t room = SERIAL_RX_FIFO - s->rx_count;
	if (room == 0 || s->in_eof)
		return;
	ssize_t n = read(s->in_fd, buf, room);
	if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
		s->in_eof = true; /* end of input or a broken fd */
		if (s->in_watched)
			evloop_mod(s->host->loop, &s->in_handler, 0);
		return;
	}
	for (ssize_t i = 0; i < n; i++)
		s->rx[(s->rx_head + s->rx_count++) % SERIAL_RX_FIFO] = buf[i];
}

/* Event loop: input is readable. */
static void serial_input_ready(void *opaque, uint32_t events)
{
	struct serial *s = opaque;
	(void)events;
	pthread_mutex_lock(&s->lock);
	rx_read(s);
	if (s->rx_count == SERIAL_RX_FIFO && !s->in_eof) {
		s->in_paused = true; /* resume watching when the guest reads */
		evloop_mod(s->host->loop, &s->in_handler, 0);
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

int serial_attach(struct serial *s, struct evloop *loop)
{
	s->in_watched = s->in_paused = s->in_eof = false;
	if (s->in_fd < 0)
		return 0;
	ev_handler_set(&s->in_handler, s->in_fd, serial_input_ready, s);
	int r = evloop_add(loop, &s->in_handler, EPOLLIN);
	if (r == -EPERM)
		return 0; /* not pollable (regular file): read on demand */
	if (r == 0)
		s->in_watched = true;
	return r;
}

/* Polled input for fds the event loop cannot watch (s->lock held). */
static void rx_poll(struct serial *s)
{
	if (s->in_watched || s->in_fd < 0 || s->rx_count)
		return;
	struct pollfd p = { .fd = s->in_fd, .events = POLLIN };
	if (poll(&p, 1, 0) > 0)
		rx_read(s);
}

static uint8_t rx_pop(struct serial *s)
{
	if (!s->rx_count)
		return 0;
	uint8_t v = s->rx[s->rx_head];
	s->rx_head = (s->rx_head + 1) % SERIAL_RX_FIFO;
	s->rx_count--;
	if (s->in_paused) {
		s->in_paused = false;
		evloop_mod(s->host->loop, &s->in_handler, EPOLLIN);
	}
	return v;
}

/*
 * Write one byte to the console fd (s->lock held). The fd is the embedder's
 * and may be full (a pipe nobody drains) or non-blocking, so never block in
 * write(): wait with poll() in short steps, and between steps let the vCPU
 * park for a pause (dropping s->lock, which other vCPUs may need on their way
 * to their own park point) or give up when the VM is stopping.
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
		bool go_on = host_yield(s->host);
		pthread_mutex_lock(&s->lock);
		if (!go_on)
			return;
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
			rx_poll(s);
			v = rx_pop(s);
		}
		break;
	case REG_IER: v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier; break;
	case REG_IIR:
		if ((s->ier & IER_RDI) && s->rx_count) {
			v = IIR_RDI;
		} else if ((s->ier & IER_THRI) && s->thre_pending) {
			v = IIR_THRI;
			s->thre_pending = false; /* reading IIR clears it */
		} else {
			v = IIR_NO_INT;
		}
		if (s->fcr & FCR_ENABLE)
			v |= IIR_FIFO;
		break;
	case REG_LCR: v = s->lcr; break;
	case REG_MCR: v = s->mcr; break;
	case REG_LSR:
		rx_poll(s);
		v = LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0);
		break;
	case REG_MSR: v = (s->mcr & MCR_LOOP) ? 0 : (MSR_DCD | MSR_DSR | MSR_CTS); break;
	case REG_SCR: v = s->scr; break;
	}
	update_irq(s);
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
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
		} else {
			emit(s, v);
			s->thre_pending = true; /* sent at once: empty again */
		}
		break;
	case REG_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling the THR-empty interrupt with THR empty raises it. */
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thre_pending = true;
			s->ier = v & 0x0f;
		}
		break;
	case REG_IIR:
		s->fcr = v;
		if (v & FCR_CLEAR_RX) {
			s->rx_head = s->rx_count = 0;
			if (s->in_paused) {
				s->in_paused = false;
				evloop_mod(s->host->loop, &s->in_handler, EPOLLIN);
			}
		}
		break;
	case REG_LCR: s->lcr = v; break;
	case REG_MCR: s->mcr = v & 0x1f; break;
	case REG_SCR: s->scr = v; break;
	default: break; /* LSR/MSR are read-only */
	}
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

const struct bus_ops serial_ops = { serial_read, serial_write };

/* ---------------------------------------------------------------- snapshot */

void serial_save(void *dev, struct st_writer *w, int node)
{
	struct serial *s = dev;
	pthread_mutex_lock(&s->lock);
	uint8_t regs[9] = { s->ier, s->lcr, s->mcr, s->scr, s->dll, s->dlm, s->fcr,
			    s->thre_pending, s->irq_level };
	uint8_t fifo[SERIAL_RX_FIFO];
	for (uint32_t i = 0; i < s->rx_count; i++)
		fifo[i] = s->rx[(s->rx_head + i) % SERIAL_RX_FIFO];
	st_blob(w, node, "regs", regs, sizeof(regs));
	st_blob(w, node, "rx-fifo", fifo, s->rx_count);
	pthread_mutex_unlock(&s->lock);
}

int serial_load(void *dev, const void *fdt, int node, char *err, size_t errlen)
{
	struct serial *s = dev;
	uint8_t regs[9];
	const void *fifo;
	size_t n;
	int r = st_get_blob(fdt, node, "regs", regs, sizeof(regs), err, errlen);
	if (r == 0)
		r = st_get_var(fdt, node, "rx-fifo", &fifo, &n, SERIAL_RX_FIFO, err, errlen);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	s->ier = regs[0];
	s->lcr = regs[1];
	s->mcr = regs[2];
	s->scr = regs[3];
	s->dll = regs[4];
	s->dlm = regs[5];
	s->fcr = regs[6];
	s->thre_pending = regs[7] != 0;
	s->irq_level = regs[8] != 0;
	memcpy(s->rx, fifo, n);
	s->rx_head = 0;
	s->rx_count = (uint32_t)n;
	pthread_mutex_unlock(&s->lock);
	return 0;
}
