/*
 * virtio-console (virtio 1.2 section 5.3): device ID 3, one port without
 * VIRTIO_CONSOLE_F_MULTIPORT, so two virtqueues: receiveq0 (index 0, the
 * device writes guest input into it) and transmitq0 (index 1, guest output).
 * VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a write to emerg_wr outputs one
 * character, even before the queues are set up.
 *
 * Everything runs on the VM's event loop thread (or, for emerg_wr, a vCPU
 * thread) with the transport lock held, and nothing may block there: the
 * console fds are the embedder's, blocking or not, and may be full pipes.
 *
 * Output (transmitq): guest bytes are copied into a host buffer of
 * VIRTIO_CONSOLE_TX_BUF bytes and the chain is returned at once; the buffer
 * is written to the output fd as far as the fd accepts it. While the fd is
 * full the device takes no more transmit buffers (they wait in the ring, so
 * the guest is held back) and watches the fd for EPOLLOUT. How a write is
 * kept from blocking depends on the fd, because a borrowed fd's O_NONBLOCK
 * flag must not be changed (it belongs to the shared open file description):
 *  - O_NONBLOCK set: plain write(), EAGAIN means full;
 *  - socket: send(MSG_DONTWAIT | MSG_NOSIGNAL);
 *  - regular file, block device, /dev/null: plain write() (does not wait);
 *  - blocking pipe/FIFO: poll() with zero timeout, then at most PIPE_BUF
 *    bytes, which a pipe reporting POLLOUT always takes without waiting;
 *  - anything else blocking (a tty): poll(), then one byte at a time.
 * A broken output fd (EPIPE, EIO...) is reported once and output is then
 * discarded, so a dead console never stalls the guest.
 *
 * Input (receiveq): the input fd is watched for EPOLLIN while the guest has
 * receive buffers; input is read straight into them (a zero-timeout poll
 * before each read keeps a blocking fd from blocking). With no buffer
 * posted the device stops watching until the guest notifies the receiveq.
 * An fd the event loop cannot watch (a regular file) is read when the guest
 * notifies the receiveq. End of input, or a read error, ends input for good.
 */
#include "virtio/devices.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "virtio/mmio.h"
#include "virtio/queue.h"
#include "errbuf.h"
#include "devices/host.h"
#include "microvm.h"

/* How output to the fd is kept from blocking (see above). */
enum out_kind {
	OUT_NEVER_WAITS, /* regular file, block device, /dev/null */
	OUT_FIFO,
	OUT_SOCKET,
	OUT_OTHER,
};

/* rx_state when the device is not live (reset, not activated, bad ring). */
#define RX_STOPPED (-1)

/* One fd registered in the event loop. */
struct con_watch {
	struct ev_handler h;
	struct virtio_console *con;
	bool added;
	uint32_t events; /* what is registered */
};

struct virtio_console {
	const struct dev_host *host; /* NULL for a bare engine (tests) */
	struct virtio_device *vdev;  /* NULL for a bare engine */
	int in_fd, out_fd;           /* borrowed, -1 = none */

	/* input */
	bool in_eof;
	bool in_pollable;            /* false once the event loop refused it */
	int rx_state;                /* last VCON_RX_* result, or RX_STOPPED */

	/* output */
	enum out_kind out_kind;
	bool out_broken;
	bool out_pollable;
	bool out_blocked;            /* bytes buffered, the fd is full */
	bool cur_valid;              /* a transmit chain partly copied */
	uint64_t cur_off;            /* bytes of it copied so far */
	uint32_t bhead, blen;        /* buffered output: buf[bhead, bhead + blen) */
	uint8_t *buf;

	/* [0]: the input fd (and the output fd when it is the same fd, since
	 * epoll takes each fd once); [1]: a separate output fd. */
	struct con_watch watch[2];

	struct virtq_chain *txc, *rxc;
};

static void con_warn(const struct virtio_console *c, const char *what, int fd, int err)
{
	host_log(c->host, MICROVM_LOG_WARN, "virtio-console: %s fd %d: %s", what, fd,
		 strerror(err));
}

/* ----------------------------------------------------------------- engine */

struct virtio_console *virtio_console_new(const struct dev_host *host)
{
	struct virtio_console *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->host = host;
	c->buf = malloc(VIRTIO_CONSOLE_TX_BUF);
	c->txc = malloc(sizeof(*c->txc));
	c->rxc = malloc(sizeof(*c->rxc));
	if (!c->buf || !c->txc || !c->rxc) {
		virtio_console_free(c);
		return NULL;
	}
	for (int i = 0; i < 2; i++)
		c->watch[i].con = c;
	c->rx_state = RX_STOPPED;
	virtio_console_set_fds(c, -1, -1);
	return c;
}

void virtio_console_free(struct virtio_console *c)
{
	if (!c)
		return;
	free(c->buf);
	free(c->txc);
	free(c->rxc);
	free(c);
}

static enum out_kind out_kind_of(int fd)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return OUT_OTHER;
	if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))
		return OUT_NEVER_WAITS;
	if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3)
		return OUT_NEVER_WAITS; /* /dev/null */
	if (S_ISFIFO(st.st_mode))
		return OUT_FIFO;
	if (S_ISSOCK(st.st_mode))
		return OUT_SOCKET;
	return OUT_OTHER;
}

void virtio_console_set_fds(struct virtio_console *c, int in_fd, int out_fd)
{
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	c->in_eof = false;
	c->in_pollable = true;
	c->out_kind = out_kind_of(out_fd);
	c->out_broken = false;
	c->out_pollable = true;
	c->out_blocked = false;
	c->cur_valid = false;
	c->cur_off = 0;
	c->bhead = c->blen = 0;
	/* Called before the event loop exists: nothing is registered. */
	for (int i = 0; i < 2; i++) {
		c->watch[i].added = false;
		c->watch[i].events = 0;
	}
}

size_t virtio_console_tx_buffered(const struct virtio_console *c)
{
	return c->blen;
}

void virtio_console_emerg_write(struct virtio_console *c, uint8_t byte)
{
	if (c->bhead + c->blen >= VIRTIO_CONSOLE_TX_BUF && c->bhead) {
		memmove(c->buf, c->buf + c->bhead, c->blen);
		c->bhead = 0;
	}
	if (c->bhead + c->blen < VIRTIO_CONSOLE_TX_BUF)
		c->buf[c->bhead + c->blen++] = byte;
}

/* One write attempt that cannot block. >0 bytes written, or -1 with errno
 * (EAGAIN: the fd is full now). */
static ssize_t out_write_some(struct virtio_console *c, const uint8_t *p, size_t n)
{
	switch (c->out_kind) {
	case OUT_NEVER_WAITS:
		return write(c->out_fd, p, n);
	case OUT_SOCKET:
		return send(c->out_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	default:
		break;
	}
	int fl = fcntl(c->out_fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		return write(c->out_fd, p, n);
	struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
	int r = poll(&pfd, 1, 0);
	if (r < 0)
		return -1;
	if (r == 0) {
		errno = EAGAIN;
		return -1;
	}
	if (pfd.revents & POLLNVAL) {
		errno = EBADF;
		return -1;
	}
	if (!(pfd.revents & POLLOUT)) {
		errno = EPIPE; /* POLLERR/POLLHUP alone: nobody reads */
		return -1;
	}
	size_t max = c->out_kind == OUT_FIFO ? PIPE_BUF : 1;
	return write(c->out_fd, p, n < max ? n : max);
}

/* Write buffered output. true when the buffer is empty (written or
 * discarded), false when the fd is full. */
static bool out_flush(struct virtio_console *c)
{
	while (c->blen > 0) {
		if (c->out_fd < 0 || c->out_broken) {
			c->blen = 0;
			break;
		}
		ssize_t n = out_write_some(c, c->buf + c->bhead, c->blen);
		if (n > 0) {
			c->bhead += (uint32_t)n;
			c->blen -= (uint32_t)n;
			continue;
		}
		int e = n < 0 ? errno : EIO; /* write() of n > 0 bytes returning 0 */
		if (e == EINTR)
			continue;
		if (e == EAGAIN || e == EWOULDBLOCK)
			return false;
		c->out_broken = true;
		con_warn(c, "output", c->out_fd, e);
	}
	c->bhead = 0;
	return true;
}

/* Copy transmit chains into the (empty) buffer until it is full or the ring
 * is empty; push every chain copied completely. 0 or -EIO. */
static int tx_fill(struct virtio_console *c, struct virtq *q, uint32_t *pushed)
{
	struct virtq_chain *ch = c->txc;
	while (c->blen < VIRTIO_CONSOLE_TX_BUF) {
		if (!c->cur_valid) {
			int r = virtq_pop_or_enable_notify(q, ch);
			if (r < 0)
				return -EIO;
			if (r == 0)
				return 0;
			c->cur_valid = true;
			c->cur_off = 0;
		}
		uint64_t left = ch->out_len - c->cur_off;
		uint64_t room = VIRTIO_CONSOLE_TX_BUF - c->blen;
		uint64_t n = left < room ? left : room;
		if (n) {
			uint64_t got = virtq_read(ch, c->cur_off, c->buf + c->blen, n);
			c->blen += (uint32_t)got;
			c->cur_off = got == n ? c->cur_off + n : ch->out_len;
		}
		if (c->cur_off >= ch->out_len) {
			/* Device-writable parts of a transmit chain are ignored:
			 * nothing is written into them (used length 0). */
			c->cur_valid = false;
			if (virtq_push(q, ch->head, 0) < 0)
				return -EIO;
			(*pushed)++;
		}
	}
	return 0;
}

int virtio_console_tx(struct virtio_console *c, struct virtq *q, uint32_t *pushed)
{
	for (;;) {
		if (!out_flush(c)) {
			c->out_blocked = true;
			return VCON_TX_BLOCKED;
		}
		/* The buffer is empty: take more output from the ring. */
		if (!q)
			break;
		if (tx_fill(c, q, pushed) < 0) {
			c->cur_valid = false;
			c->out_blocked = !out_flush(c);
			return -EIO;
		}
		if (c->blen == 0)
			break;
	}
	c->out_blocked = false;
	return VCON_TX_DONE;
}

/* 1 if a read of the input fd would not block now (data, end of file or an
 * error to report), else 0. */
static int input_ready(const struct virtio_console *c)
{
	struct pollfd pfd = { .fd = c->in_fd, .events = POLLIN };
	int r = poll(&pfd, 1, 0);
	if (r < 0)
		return errno == EINTR ? 0 : 1; /* let read() report the error */
	return r > 0;
}

int virtio_console_rx(struct virtio_console *c, struct virtq *q, int batch, uint32_t *pushed)
{
	struct virtq_chain *ch = c->rxc;
	if (c->in_fd < 0 || c->in_eof)
		return VCON_RX_EOF;
	for (uint32_t done = 0;; done++) {
		if (batch && done >= VIRTIO_CONSOLE_RX_BATCH)
			return VCON_RX_MORE;
		if (!input_ready(c))
			return VCON_RX_IDLE;
		int r = virtq_pop_or_enable_notify(q, ch);
		if (r < 0)
			return -EIO;
		if (r == 0)
			return VCON_RX_STARVED;
		if (ch->in_len == 0) {
			/* No device-writable buffer: nothing to put in it. */
			if (virtq_push(q, ch->head, 0) < 0)
				return -EIO;
			(*pushed)++;
			continue;
		}
		uint32_t n_in = ch->n_in;
		if (n_in > VIRTQ_MAX_SIZE - ch->n_out)
			n_in = VIRTQ_MAX_SIZE - ch->n_out;
		ssize_t got = readv(c->in_fd, ch->iov + ch->n_out, (int)n_in);
		if (got > 0) {
			if (virtq_push(q, ch->head, (uint32_t)got) < 0)
				return -EIO;
			(*pushed)++;
			continue;
		}
		int e = got < 0 ? errno : 0;
		/* Nothing was written into the chain: give it back (it is
		 * the entry virtq_pop just took). */
		q->last_avail--;
		if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
			return VCON_RX_IDLE;
		c->in_eof = true;
		if (e)
			con_warn(c, "input", c->in_fd, e);
		return VCON_RX_EOF;
	}
}

/* ------------------------------------------------------- transport glue */

static bool queue_live(const struct virtio_device *d, uint16_t q)
{
	return (d->status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(d->status & VIRTIO_STATUS_NEEDS_RESET) && d->queues[q].ready;
}

/* Serve guest input (transport lock held). */
static void rx_kick(struct virtio_console *c)
{
	struct virtio_device *d = c->vdev;
	if (!queue_live(d, VIRTIO_CONSOLE_RXQ)) {
		c->rx_state = RX_STOPPED;
		return;
	}
	uint32_t pushed = 0;
	int r = virtio_console_rx(c, &d->queues[VIRTIO_CONSOLE_RXQ], c->in_pollable, &pushed);
	if (r < 0) {
		virtio_set_needs_reset(d, "malformed receive ring");
		c->rx_state = RX_STOPPED;
	} else {
		c->rx_state = r;
	}
	if (pushed)
		virtio_notify_used(d, VIRTIO_CONSOLE_RXQ);
}

/* Serve guest output, or just write buffered output when the transmitq is
 * not live (transport lock held). */
static void tx_kick(struct virtio_console *c)
{
	struct virtio_device *d = c->vdev;
	bool live = queue_live(d, VIRTIO_CONSOLE_TXQ);
	uint32_t pushed = 0;
	int r = virtio_console_tx(c, live ? &d->queues[VIRTIO_CONSOLE_TXQ] : NULL, &pushed);
	if (r < 0)
		virtio_set_needs_reset(d, "malformed transmit ring");
	if (pushed)
		virtio_notify_used(d, VIRTIO_CONSOLE_TXQ);
}

static void console_fd_event(void *opaque, uint32_t events);

/*
 * Make the event loop watch what is needed now: the input fd for EPOLLIN
 * while input is wanted (device live, receive buffers not exhausted, input
 * not ended), the output fd for EPOLLOUT while output is blocked. Transport
 * lock held.
 */
static void watch_sync(struct virtio_console *c)
{
	if (!c->vdev || !c->host)
		return;
	struct evloop *loop = c->host->loop;
	bool want_in = c->in_fd >= 0 && c->in_pollable && !c->in_eof &&
		       (c->rx_state == VCON_RX_IDLE || c->rx_state == VCON_RX_MORE);
	bool want_out = c->out_fd >= 0 && c->out_pollable && !c->out_broken && c->out_blocked;
	bool shared = c->out_fd >= 0 && c->out_fd == c->in_fd;
	uint32_t ev[2] = { 0, 0 };
	if (want_in)
		ev[0] |= EPOLLIN;
	if (want_out)
		ev[shared ? 0 : 1] |= EPOLLOUT;
	for (int i = 0; i < 2; i++) {
		struct con_watch *w = &c->watch[i];
		if (ev[i] == 0) {
			if (w->added)
				evloop_del(loop, &w->h);
			w->added = false;
			w->events = 0;
			continue;
		}
		if (w->added) {
			if (w->events != ev[i] && evloop_mod(loop, &w->h, ev[i]) == 0)
				w->events = ev[i];
			continue;
		}
		ev_handler_set(&w->h, i == 0 ? c->in_fd : c->out_fd, console_fd_event, w);
		int r = evloop_add(loop, &w->h, ev[i]);
		if (r == 0) {
			w->added = true;
			w->events = ev[i];
			continue;
		}
		/* Not pollable (-EPERM: a regular file) or no room in epoll:
		 * input is then read when the guest notifies the receiveq,
		 * and output that cannot be written is discarded. */
		if (ev[i] & EPOLLIN) {
			c->in_pollable = false;
			if (r != -EPERM)
				con_warn(c, "input (cannot watch it)", c->in_fd, -r);
		}
		if (ev[i] & EPOLLOUT) {
			c->out_pollable = false;
			c->out_broken = true;
			c->blen = c->bhead = 0;
			c->out_blocked = false;
			con_warn(c, "output (cannot watch it)", c->out_fd, -r);
		}
	}
}

/* Event loop: a console fd is ready (or hung up / in error). */
static void console_fd_event(void *opaque, uint32_t events)
{
	struct con_watch *w = opaque;
	struct virtio_console *c = w->con;
	struct virtio_device *d = c->vdev;
	pthread_mutex_lock(&d->lock);
	if (w->added) {
		uint32_t any = EPOLLERR | EPOLLHUP;
		if ((w->events & EPOLLIN) && (events & (EPOLLIN | any)))
			rx_kick(c);
		if ((w->events & EPOLLOUT) && (events & (EPOLLOUT | any)))
			tx_kick(c);
	}
	watch_sync(c);
	pthread_mutex_unlock(&d->lock);
}

/* Ask the event loop to look at queue @q (as a driver notification would). */
static void self_notify(struct virtio_device *vdev, uint16_t q)
{
	if (vdev->notify_fd[q] >= 0) {
		uint64_t one = 1;
		ssize_t n = write(vdev->notify_fd[q], &one, sizeof(one));
		(void)n; /* only fails when the counter is saturated: still pending */
	}
}

static void con_config_read(void *opaque, uint32_t off, void *data, uint32_t len)
{
	uint8_t cfg[VIRTIO_CONSOLE_CFG_SIZE] = { 0 };
	/* cols/rows: F_SIZE is not offered. max_nr_ports only means something
	 * with F_MULTIPORT; it says 1, the one port there is. emerg_wr reads
	 * as 0. */
	uint32_t ports = htole32(1);
	memcpy(cfg + VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, &ports, sizeof(ports));
	memcpy(data, cfg + off, len); /* the transport checked off + len */
}

static void con_config_write(void *opaque, uint32_t off, const void *data, uint32_t len)
{
	struct virtio_console *c = opaque;
	/* emerg_wr: the character is in the low byte of the le32 field. */
	if (off != VIRTIO_CONSOLE_CFG_EMERG_WR || len == 0 || !c->vdev)
		return;
	virtio_console_emerg_write(c, *(const uint8_t *)data);
	tx_kick(c);
	watch_sync(c);
}

static int con_activate(void *opaque, struct virtio_device *vdev)
{
	struct virtio_console *c = opaque;
	c->vdev = vdev;
	c->rx_state = VCON_RX_IDLE; /* input wanted: watch the fd */
	watch_sync(c);
	/* Buffers posted before DRIVER_OK were notified while the transport
	 * ignored notifications: look at both rings once now. */
	self_notify(vdev, VIRTIO_CONSOLE_RXQ);
	self_notify(vdev, VIRTIO_CONSOLE_TXQ);
	return 0;
}

static void con_notify(void *opaque, struct virtio_device *vdev, uint16_t q)
{
	struct virtio_console *c = opaque;
	if (q == VIRTIO_CONSOLE_RXQ)
		rx_kick(c); /* new receive buffers: input may flow again */
	else if (q == VIRTIO_CONSOLE_TXQ)
		tx_kick(c);
	watch_sync(c);
}

static void con_reset(void *opaque)
{
	struct virtio_console *c = opaque;
	/* A chain taken from the old ring is not the device's any more, and
	 * input stops; output already accepted is still written. */
	c->cur_valid = false;
	c->rx_state = RX_STOPPED;
	watch_sync(c);
}

static void con_release(void *opaque)
{
	struct virtio_console *c = opaque;
	virtio_console_free(c);
}

const struct virtio_device_ops virtio_console_ops = {
	.name = "virtio-console",
	.device_id = VIRTIO_ID_CONSOLE,
	.features = 1ULL << VIRTIO_CONSOLE_F_EMERG_WRITE,
	.num_queues = 2,
	.config_size = VIRTIO_CONSOLE_CFG_SIZE,
	.config_read = con_config_read,
	.config_write = con_config_write,
	.activate = con_activate,
	.notify = con_notify,
	.reset = con_reset,
	.release = con_release,
};
