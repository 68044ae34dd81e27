/*
 * virtio-vsock (virtio 1.2 section 5.10): device ID 19, queues rx (0), tx (1)
 * and event (2), config le64 guest_cid, no device feature bits (stream
 * sockets are implied). The host is CID 2; only the configured guest CID may
 * send.
 *
 * Every stream has a host-side AF_UNIX stream fd (non-blocking) watched in
 * the VM's event loop; streams live in a table keyed by (local port = host
 * side, peer port = guest side), at most VSOCK_MAX_CONNS (Unix clients still
 * sending their CONNECT line included).
 *
 * Lifecycle of a stream:
 *  - guest -> host: REQUEST to port P -> non-blocking connect to
 *    "<uds_path>_P" -> RESPONSE, or RST if it fails (EAGAIN, a full backlog,
 *    counts as failure) or there is no uds_path or no free slot.
 *  - host -> guest: a client of the listening socket at uds_path sends
 *    "CONNECT P\n" (read byte by byte, at most VSOCK_LINE_MAX), or
 *    virtio_vsock_connect() makes a socketpair; the device picks a free host
 *    port from VSOCK_PORT_FIRST up (wrapping, skipping ports in use) and
 *    sends REQUEST. RESPONSE -> "OK <host port>\n" to the client (or the fd
 *    to the connect caller) and the stream is up; RST -> the client is
 *    closed (connect returns -ECONNREFUSED).
 *  - closing: guest SHUTDOWN flags map to shutdown(SHUT_RD/SHUT_WR) of the
 *    host fd (SHUT_WR once buffered data is written). End of file on the
 *    host fd -> SHUTDOWN(SEND). Once the guest said RCV|SEND, or it said
 *    SEND and the host fd ended, the device closes the fd and sends RST.
 *    Host fd errors -> RST. Guest RST -> close at once, no reply. A stream
 *    the device closes keeps its slot until its RST is in the rx queue.
 *
 * Flow control (credit, section 5.10.6.3):
 *  - guest -> host: we advertise buf_alloc VSOCK_BUF_ALLOC and fwd_cnt =
 *    bytes written to the host fd. Payloads go straight to the fd; what it
 *    does not take is buffered (at most VSOCK_BUF_ALLOC, allocated on
 *    demand, freed when empty). A RW beyond the credit given resets the
 *    stream. CREDIT_UPDATE is sent when the guest's view of our free space
 *    drops below VSOCK_CREDIT_LOW and fwd_cnt moved; every packet carries
 *    the current fwd_cnt anyway.
 *  - host -> guest: data is read from the host fd straight into rx buffers,
 *    at most min(peer credit, buffer, VSOCK_MAX_PKT) per packet. EPOLLIN is
 *    watched only while the stream has credit and is not already marked
 *    readable; a readable stream waits in a FIFO for rx buffers, so with no
 *    rx buffers or no credit the host fd is not polled at all.
 *
 * Malformed packets: shorter than a header, or from another CID / to
 * another CID than the host -> dropped; unknown type, len > VSOCK_MAX_PKT
 * or beyond the buffer, unknown op -> RST (the stream is closed if it
 * exists); a packet for no stream -> RST reply (queued in a bounded FIFO,
 * dropped when full). A malformed ring, or an rx/event buffer too small or
 * device-readable, -> DEVICE_NEEDS_RESET.
 *
 * Stale events: the loop takes up to 16 events per wakeup, so a handler may
 * run for a stream closed by an earlier handler of the same batch. Stream
 * structs are therefore never freed before the device (they go to a free
 * list), and handlers only try non-blocking operations, so a spurious call
 * does nothing.
 */
#include "virtio/vsock.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "errbuf.h"
#include "evloop.h"
#include "file.h"
#include "virtio/mmio.h"
#include "virtio/queue.h"
#include "errbuf.h"
#include "devices/host.h"
#include "microvm.h"
#include "snapshot/state.h"

#define HASH_SIZE 1024u
#define LISTEN_BACKLOG 128
#define WAIT_SLICE_MS 100

/* Stream states. */
enum {
	CS_FREE,
	CS_LINE,        /* Unix client sending its CONNECT line (not hashed) */
	CS_CONNECTING,  /* guest REQUEST, host connect() in progress */
	CS_REQUEST,     /* our REQUEST queued or sent, waiting for the guest */
	CS_ESTABLISHED,
	CS_CLOSING,     /* fd closed, RST to the guest pending */
};

/* Control packets pending for a stream (sent in this order). */
#define CTL_REQUEST 1u
#define CTL_RESPONSE 2u
#define CTL_SHUTDOWN 4u
#define CTL_RST 8u
#define CTL_CREDIT 16u

struct vsock_waiter {
	int result;
	bool done;
	struct vsock_conn *conn;
};

struct vsock_conn {
	struct virtio_vsock *v;
	struct ev_handler h;
	int fd;
	uint32_t watched;           /* events registered, 0 = not in epoll */
	int state;
	uint32_t local_port, peer_port;
	bool hashed;
	struct vsock_conn *hnext;
	bool in_rx;                 /* in the rx FIFO */
	struct vsock_conn *rx_prev, *rx_next;
	uint32_t ctl;               /* CTL_* pending */
	uint32_t shut_to_send;      /* flags of the pending SHUTDOWN */
	bool host_readable;         /* the fd may have data: read until EAGAIN */
	bool host_eof;              /* end of file read from the fd */
	bool req_sent;              /* our REQUEST reached the rx queue */
	bool wr_shut;               /* shutdown(SHUT_WR) done */
	uint32_t guest_shut;        /* SHUTDOWN flags received */
	/* guest -> host credit */
	uint32_t rx_cnt, fwd_cnt, fwd_sent;
	/* host -> guest credit */
	uint32_t tx_cnt, peer_buf_alloc, peer_fwd_cnt;
	/* bytes for the host fd not written yet: buf[bhead, bhead + blen); the
	 * first @pre of them are our own ("OK <port>\n"), not guest data */
	uint8_t *buf;
	uint32_t bhead, blen, bcap, pre;
	char line[VSOCK_LINE_MAX];
	uint32_t line_len;
	struct vsock_waiter *waiter;
};

struct rst_reply {
	uint32_t src_port, dst_port; /* as sent to the guest */
};

struct virtio_vsock {
	struct vsock_env env;
	struct virtio_device *vdev;  /* transport glue only */
	uint64_t guest_cid;
	char *uds_path;
	int listen_fd;
	dev_t listen_dev;
	ino_t listen_ino;
	struct ev_handler listen_h;
	bool listen_watched;

	bool live;                   /* queues usable */
	struct virtq *rxq, *txq, *evq;
	bool event_pending;

	struct vsock_conn *pool[VSOCK_MAX_CONNS];
	uint32_t npool;
	struct vsock_conn *free_list[VSOCK_MAX_CONNS];
	uint32_t nfree;
	struct vsock_conn *hash[HASH_SIZE];
	struct vsock_conn *rx_head, *rx_tail;
	uint32_t next_port;

	struct rst_reply rst[VSOCK_RST_QUEUE];
	uint32_t rst_head, rst_count;

	pthread_cond_t cond;         /* connect() waiters, with env.lock */
	uint32_t users;              /* connect() calls inside */

	struct virtq_chain chain;    /* scratch (large) */
	struct iovec iov[VIRTQ_MAX_SIZE];
};

#define vs_warn(v, ...) host_log((v)->env.host, MICROVM_LOG_WARN, __VA_ARGS__)

/* --------------------------------------------------------------- header */

static void put_le16(uint8_t *p, uint16_t x) { x = htole16(x); memcpy(p, &x, 2); }
static void put_le32(uint8_t *p, uint32_t x) { x = htole32(x); memcpy(p, &x, 4); }
static void put_le64(uint8_t *p, uint64_t x) { x = htole64(x); memcpy(p, &x, 8); }
static uint16_t get_le16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return le16toh(x); }
static uint32_t get_le32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return le32toh(x); }
static uint64_t get_le64(const uint8_t *p) { uint64_t x; memcpy(&x, p, 8); return le64toh(x); }

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t out[VSOCK_HDR_SIZE])
{
	put_le64(out + 0, h->src_cid);
	put_le64(out + 8, h->dst_cid);
	put_le32(out + 16, h->src_port);
	put_le32(out + 20, h->dst_port);
	put_le32(out + 24, h->len);
	put_le16(out + 28, h->type);
	put_le16(out + 30, h->op);
	put_le32(out + 32, h->flags);
	put_le32(out + 36, h->buf_alloc);
	put_le32(out + 40, h->fwd_cnt);
}

void vsock_hdr_decode(const uint8_t in[VSOCK_HDR_SIZE], struct vsock_hdr *h)
{
	h->src_cid = get_le64(in + 0);
	h->dst_cid = get_le64(in + 8);
	h->src_port = get_le32(in + 16);
	h->dst_port = get_le32(in + 20);
	h->len = get_le32(in + 24);
	h->type = get_le16(in + 28);
	h->op = get_le16(in + 30);
	h->flags = get_le32(in + 32);
	h->buf_alloc = get_le32(in + 36);
	h->fwd_cnt = get_le32(in + 40);
}

/* ------------------------------------------------------------ helpers */

/* iov[] for bytes [off, off + len) of @n iovecs. Returns the count. */
static uint32_t chain_nout(const struct virtq_chain *c)
{
	return c->n_out < VIRTQ_MAX_SIZE ? c->n_out : VIRTQ_MAX_SIZE;
}

static uint32_t chain_nin(const struct virtq_chain *c)
{
	uint32_t o = chain_nout(c);
	return c->n_in < VIRTQ_MAX_SIZE - o ? c->n_in : VIRTQ_MAX_SIZE - o;
}

static uint32_t hash_of(uint32_t local, uint32_t peer)
{
	return ((local * 2654435761u) ^ (peer * 40503u)) & (HASH_SIZE - 1u);
}

static struct vsock_conn *lookup(const struct virtio_vsock *v, uint32_t local, uint32_t peer)
{
	for (struct vsock_conn *c = v->hash[hash_of(local, peer)]; c; c = c->hnext)
		if (c->local_port == local && c->peer_port == peer)
			return c;
	return NULL;
}

static void hash_add(struct virtio_vsock *v, struct vsock_conn *c)
{
	uint32_t b = hash_of(c->local_port, c->peer_port);
	c->hnext = v->hash[b];
	v->hash[b] = c;
	c->hashed = true;
}

static void hash_del(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (!c->hashed)
		return;
	struct vsock_conn **pp = &v->hash[hash_of(c->local_port, c->peer_port)];
	while (*pp && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = c->hnext;
	c->hnext = NULL;
	c->hashed = false;
}

static void rx_unlink(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (!c->in_rx)
		return;
	if (c->rx_prev)
		c->rx_prev->rx_next = c->rx_next;
	else
		v->rx_head = c->rx_next;
	if (c->rx_next)
		c->rx_next->rx_prev = c->rx_prev;
	else
		v->rx_tail = c->rx_prev;
	c->rx_prev = c->rx_next = NULL;
	c->in_rx = false;
}

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static bool wants_read(const struct vsock_conn *c)
{
	return c->state == CS_ESTABLISHED && c->fd >= 0 && !c->host_eof &&
	       !(c->guest_shut & VSOCK_SHUTDOWN_RCV) && peer_credit(c) > 0;
}

/* Something to put in the rx queue for this stream. */
static bool has_rx_work(const struct vsock_conn *c)
{
	if (c->state == CS_FREE)
		return false;
	return c->ctl != 0 || (c->host_readable && wants_read(c));
}

static void rx_want(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->in_rx || !has_rx_work(c))
		return;
	c->rx_prev = v->rx_tail;
	c->rx_next = NULL;
	if (v->rx_tail)
		v->rx_tail->rx_next = c;
	else
		v->rx_head = c;
	v->rx_tail = c;
	c->in_rx = true;
}

static void conn_event(void *opaque, uint32_t events);
static void conn_reset(struct virtio_vsock *v, struct vsock_conn *c, int waiter_result);

/* Register in the loop what the stream needs now. */
static void conn_watch(struct virtio_vsock *v, struct vsock_conn *c)
{
	uint32_t want = 0;
	if (c->fd >= 0) {
		switch (c->state) {
		case CS_LINE:
			want = EPOLLIN;
			break;
		case CS_CONNECTING:
			want = EPOLLOUT;
			break;
		case CS_ESTABLISHED:
			if (!c->host_readable && wants_read(c))
				want |= EPOLLIN;
			if (c->blen)
				want |= EPOLLOUT;
			break;
		default:
			break;
		}
	}
	if (want == c->watched)
		return;
	if (want == 0) {
		/* Removed rather than idle: a hung-up fd would still wake
		 * the loop with EPOLLHUP. */
		evloop_del(v->env.loop, &c->h);
		c->watched = 0;
		return;
	}
	ev_handler_set(&c->h, c->fd, conn_event, c);
	int r = c->watched ? evloop_mod(v->env.loop, &c->h, want)
			   : evloop_add(v->env.loop, &c->h, want);
	if (r == 0) {
		c->watched = want;
		return;
	}
	vs_warn(v, "virtio-vsock: cannot watch fd %d: %s", c->fd, strerror(-r));
	conn_reset(v, c, -ECONNRESET); /* unusable: close it */
}

/* ------------------------------------------------------ stream lifetime */

static struct vsock_conn *conn_alloc(struct virtio_vsock *v)
{
	struct vsock_conn *c;
	if (v->nfree) {
		c = v->free_list[--v->nfree];
	} else if (v->npool < VSOCK_MAX_CONNS) {
		c = malloc(sizeof(*c));
		if (!c)
			return NULL;
		v->pool[v->npool++] = c;
	} else {
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->v = v;
	c->fd = -1;
	c->state = CS_LINE;
	return c;
}

static void waiter_done(struct virtio_vsock *v, struct vsock_conn *c, int result)
{
	struct vsock_waiter *w = c->waiter;
	if (!w)
		return;
	c->waiter = NULL;
	w->result = result;
	w->done = true;
	w->conn = NULL;
	pthread_cond_broadcast(&v->cond);
}

static void conn_close_fd(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->watched)
		evloop_del(v->env.loop, &c->h);
	c->watched = 0;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->bhead = c->blen = c->bcap = c->pre = 0;
	c->host_readable = false;
}

/* Forget the stream without telling the guest. */
static void conn_free(struct virtio_vsock *v, struct vsock_conn *c, int waiter_result)
{
	if (c->state == CS_FREE)
		return;
	conn_close_fd(v, c);
	hash_del(v, c);
	rx_unlink(v, c);
	waiter_done(v, c, waiter_result);
	c->state = CS_FREE;
	c->ctl = 0;
	v->free_list[v->nfree++] = c;
}

/* Close the host side and RST the guest if it knows the stream. */
static void conn_reset(struct virtio_vsock *v, struct vsock_conn *c, int waiter_result)
{
	bool guest_knows = c->hashed && (c->state == CS_ESTABLISHED ||
					 c->state == CS_CONNECTING ||
					 (c->state == CS_REQUEST && c->req_sent));
	if (!guest_knows) {
		conn_free(v, c, waiter_result);
		return;
	}
	conn_close_fd(v, c);
	waiter_done(v, c, waiter_result);
	c->state = CS_CLOSING;
	/* A SHUTDOWN already queued still goes first (clean end of data). */
	c->ctl = (c->ctl & CTL_SHUTDOWN) | CTL_RST;
	rx_want(v, c);
}

static void close_all(struct virtio_vsock *v, int waiter_result)
{
	for (uint32_t i = 0; i < v->npool; i++)
		conn_free(v, v->pool[i], waiter_result);
	v->rst_head = v->rst_count = 0;
	v->rx_head = v->rx_tail = NULL;
}

static uint32_t nr_conns(const struct virtio_vsock *v)
{
	return v->npool - v->nfree;
}

/* ----------------------------------------------------------- to the guest */

static void fill_hdr(const struct virtio_vsock *v, struct vsock_hdr *h, uint32_t src_port,
		     uint32_t dst_port, uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = VSOCK_HOST_CID;
	h->dst_cid = v->guest_cid;
	h->src_port = src_port;
	h->dst_port = dst_port;
	h->type = VSOCK_TYPE_STREAM;
	h->op = op;
}

static void write_hdr(const struct virtq_chain *ch, const struct vsock_hdr *h)
{
	uint8_t raw[VSOCK_HDR_SIZE];
	vsock_hdr_encode(h, raw);
	virtq_write(ch, 0, raw, sizeof(raw));
}

/* Header of a packet of stream @c, with our credit. */
static void conn_hdr(struct vsock_conn *c, struct vsock_hdr *h, uint16_t op)
{
	fill_hdr(c->v, h, c->local_port, c->peer_port, op);
	h->buf_alloc = VSOCK_BUF_ALLOC;
	h->fwd_cnt = c->fwd_cnt;
	c->fwd_sent = c->fwd_cnt;
	c->ctl &= ~CTL_CREDIT; /* carried by this packet */
}

/* Queue an RST reply to a guest packet that belongs to no stream. */
static void reply_rst(struct virtio_vsock *v, const struct vsock_hdr *in)
{
	if (in->op == VSOCK_OP_RST || v->rst_count >= VSOCK_RST_QUEUE)
		return;
	struct rst_reply *r = &v->rst[(v->rst_head + v->rst_count) % VSOCK_RST_QUEUE];
	r->src_port = in->dst_port;
	r->dst_port = in->src_port;
	v->rst_count++;
}

static void check_done(struct virtio_vsock *v, struct vsock_conn *c);

/* Read host data into the rx chain after the header. Bytes, 0 for none. */
static uint32_t conn_read(struct virtio_vsock *v, struct vsock_conn *c, struct virtq_chain *ch)
{
	uint64_t room = ch->in_len - VSOCK_HDR_SIZE;
	uint32_t n = peer_credit(c);
	if (n > VSOCK_MAX_PKT)
		n = VSOCK_MAX_PKT;
	if (n > room)
		n = (uint32_t)room;
	if (n == 0) {
		/* A header-only rx buffer: use it for a credit update (always
		 * valid) so the buffer is consumed and the loop moves on. */
		struct vsock_hdr h;
		conn_hdr(c, &h, VSOCK_OP_CREDIT_UPDATE);
		write_hdr(ch, &h);
		return VSOCK_HDR_SIZE;
	}
	int k = (int)virtq_iov_slice(ch->iov + chain_nout(ch), chain_nin(ch), VSOCK_HDR_SIZE, n,
				     v->iov);
	struct msghdr mh = { .msg_iov = v->iov, .msg_iovlen = (size_t)k };
	ssize_t got;
	do
		got = recvmsg(c->fd, &mh, MSG_DONTWAIT);
	while (got < 0 && errno == EINTR);
	if (got > 0) {
		struct vsock_hdr h;
		conn_hdr(c, &h, VSOCK_OP_RW);
		h.len = (uint32_t)got;
		write_hdr(ch, &h);
		c->tx_cnt += (uint32_t)got;
		return VSOCK_HDR_SIZE + (uint32_t)got;
	}
	c->host_readable = false;
	if (got == 0) {
		c->host_eof = true;
		c->ctl |= CTL_SHUTDOWN;
		c->shut_to_send |= VSOCK_SHUTDOWN_SEND;
		check_done(v, c);
	} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
		conn_reset(v, c, -ECONNRESET);
	}
	return 0;
}

/* Put one packet of stream @c into @ch. Bytes written, 0 for nothing. */
static uint32_t conn_fill(struct virtio_vsock *v, struct vsock_conn *c, struct virtq_chain *ch)
{
	for (int tries = 0; tries < 3; tries++) {
		struct vsock_hdr h;
		uint32_t bit = 0;
		uint16_t op = 0;
		if (c->ctl & CTL_REQUEST) {
			bit = CTL_REQUEST, op = VSOCK_OP_REQUEST;
		} else if (c->ctl & CTL_RESPONSE) {
			bit = CTL_RESPONSE, op = VSOCK_OP_RESPONSE;
		} else if (c->ctl & CTL_SHUTDOWN) {
			bit = CTL_SHUTDOWN, op = VSOCK_OP_SHUTDOWN;
		} else if (c->ctl & CTL_RST) {
			bit = CTL_RST, op = VSOCK_OP_RST;
		}
		if (bit) {
			c->ctl &= ~bit;
			conn_hdr(c, &h, op);
			if (op == VSOCK_OP_SHUTDOWN)
				h.flags = c->shut_to_send;
			write_hdr(ch, &h);
			if (op == VSOCK_OP_REQUEST)
				c->req_sent = true;
			if (op == VSOCK_OP_RST)
				conn_free(v, c, -ECONNRESET);
			else if (op == VSOCK_OP_SHUTDOWN)
				check_done(v, c);
			return VSOCK_HDR_SIZE;
		}
		if (c->host_readable && wants_read(c)) {
			uint32_t n = conn_read(v, c, ch);
			if (n)
				return n;
			continue; /* EOF or error may have queued a packet */
		}
		if (c->ctl & CTL_CREDIT) {
			conn_hdr(c, &h, VSOCK_OP_CREDIT_UPDATE);
			write_hdr(ch, &h);
			return VSOCK_HDR_SIZE;
		}
		return 0;
	}
	return 0;
}

static void mark_broken(struct virtio_vsock *v, const char *why)
{
	v->live = false;
	if (v->env.broken)
		v->env.broken(v->env.opaque, why);
}

/* Pop a device-writable chain of at least @min bytes. 1, 0 (ring empty) or
 * -1 (broken; reported). */
static int pop_in(struct virtio_vsock *v, struct virtq *q, uint32_t min, const char *what)
{
	struct virtq_chain *ch = &v->chain;
	int r = virtq_pop_or_enable_notify(q, ch);
	if (r < 0) {
		mark_broken(v, what);
		return -1;
	}
	if (r == 0)
		return 0;
	if (ch->n_out || ch->in_len < min) {
		mark_broken(v, what);
		return -1;
	}
	return 1;
}

/* Move pending packets into the rx queue while it has buffers. */
static void rx_process(struct virtio_vsock *v)
{
	if (!v->live || !v->rxq || !v->rxq->ready)
		return;
	struct virtq *q = v->rxq;
	struct virtq_chain *ch = &v->chain;
	uint32_t pushed = 0;
	while (v->rst_count || v->rx_head) {
		int r = pop_in(v, q, VSOCK_HDR_SIZE, "rx buffer malformed or smaller than a header");
		if (r <= 0)
			break;
		uint32_t used = 0;
		if (v->rst_count) {
			struct rst_reply *rr = &v->rst[v->rst_head];
			v->rst_head = (v->rst_head + 1) % VSOCK_RST_QUEUE;
			v->rst_count--;
			struct vsock_hdr h;
			fill_hdr(v, &h, rr->src_port, rr->dst_port, VSOCK_OP_RST);
			write_hdr(ch, &h);
			used = VSOCK_HDR_SIZE;
		} else {
			struct vsock_conn *c = v->rx_head;
			rx_unlink(v, c);
			used = conn_fill(v, c, ch);
			rx_want(v, c); /* more to send: back at the tail */
			conn_watch(v, c);
		}
		if (used == 0) {
			q->last_avail--; /* nothing written: give the chain back */
			continue;
		}
		if (virtq_push(q, ch->head, used) < 0) {
			mark_broken(v, "rx used ring outside RAM");
			break;
		}
		pushed++;
	}
	if (pushed && v->env.used)
		v->env.used(v->env.opaque, VSOCK_RXQ);
}

static void ev_process(struct virtio_vsock *v)
{
	if (!v->event_pending || !v->live || !v->evq || !v->evq->ready)
		return;
	if (pop_in(v, v->evq, 4, "event buffer malformed or smaller than 4 bytes") <= 0)
		return;
	uint8_t ev[4];
	put_le32(ev, VSOCK_EVENT_TRANSPORT_RESET);
	virtq_write(&v->chain, 0, ev, sizeof(ev));
	if (virtq_push(v->evq, v->chain.head, sizeof(ev)) < 0) {
		mark_broken(v, "event used ring outside RAM");
		return;
	}
	v->event_pending = false;
	if (v->env.used)
		v->env.used(v->env.opaque, VSOCK_EVQ);
}

/* ------------------------------------------------------------- host fd */

/* Write buffered bytes to the host fd. false if the stream was reset. */
static bool conn_flush(struct virtio_vsock *v, struct vsock_conn *c)
{
	while (c->blen && c->fd >= 0) {
		ssize_t n = send(c->fd, c->buf + c->bhead, c->blen, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			conn_reset(v, c, -ECONNRESET);
			return false;
		}
		uint32_t w = (uint32_t)n, own = w < c->pre ? w : c->pre;
		c->pre -= own;
		c->fwd_cnt += w - own;
		c->bhead += w;
		c->blen -= w;
	}
	if (c->blen == 0) {
		free(c->buf);
		c->buf = NULL;
		c->bhead = c->bcap = 0;
	}
	return true;
}

/* Keep @n bytes for the host fd (after what is buffered). */
static bool buf_append(struct vsock_conn *c, const struct virtq_chain *ch, uint64_t off,
		       const void *src, uint32_t n)
{
	if (c->bhead + c->blen + n > c->bcap) {
		if (c->bhead) {
			memmove(c->buf, c->buf + c->bhead, c->blen);
			c->bhead = 0;
		}
		if (c->blen + n > c->bcap) {
			uint32_t cap = c->bcap ? c->bcap : 16384;
			while (cap < c->blen + n)
				cap *= 2;
			uint8_t *p = realloc(c->buf, cap);
			if (!p)
				return false;
			c->buf = p;
			c->bcap = cap;
		}
	}
	uint8_t *dst = c->buf + c->bhead + c->blen;
	if (src)
		memcpy(dst, src, n);
	else
		virtq_read(ch, off, dst, n);
	c->blen += n;
	return true;
}

/* Ask for a CREDIT_UPDATE when the guest's view of our space is low. */
static void credit_check(struct vsock_conn *c)
{
	uint32_t guest_view_used = c->rx_cnt - c->fwd_sent;
	uint32_t guest_view_free =
		guest_view_used >= VSOCK_BUF_ALLOC ? 0 : VSOCK_BUF_ALLOC - guest_view_used;
	if (c->fwd_cnt != c->fwd_sent && guest_view_free < VSOCK_CREDIT_LOW)
		c->ctl |= CTL_CREDIT;
}

/* The stream is over in both directions: close and RST. */
static void check_done(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->state != CS_ESTABLISHED || c->blen)
		return;
	uint32_t both = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;
	if ((c->guest_shut & both) == both ||
	    ((c->guest_shut & VSOCK_SHUTDOWN_SEND) && c->host_eof && !(c->ctl & CTL_SHUTDOWN)))
		conn_reset(v, c, 0);
}

/* After buffered data was written: deferred SHUT_WR, credit, the end. */
static void conn_after_write(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->state != CS_ESTABLISHED)
		return;
	if (c->blen == 0 && (c->guest_shut & VSOCK_SHUTDOWN_SEND) && !c->wr_shut && c->fd >= 0) {
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
	}
	credit_check(c);
	check_done(v, c);
}

static void line_read(struct virtio_vsock *v, struct vsock_conn *c);

/* Event loop: a stream's host fd is ready (or the call is stale). */
static void conn_event(void *opaque, uint32_t events)
{
	struct vsock_conn *c = opaque;
	struct virtio_vsock *v = c->v;
	(void)events; /* only non-blocking attempts follow: flags do not matter */
	pthread_mutex_lock(v->env.lock);
	if (c->fd >= 0 && c->watched) {
		switch (c->state) {
		case CS_LINE:
			line_read(v, c);
			break;
		case CS_CONNECTING: {
			int err = 0;
			socklen_t len = sizeof(err);
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
			if (err == 0) {
				c->state = CS_ESTABLISHED;
				c->ctl |= CTL_RESPONSE;
			} else {
				conn_reset(v, c, 0);
			}
			break;
		}
		case CS_ESTABLISHED:
			if (c->watched & EPOLLIN)
				c->host_readable = true;
			if (c->blen && conn_flush(v, c))
				conn_after_write(v, c);
			break;
		default:
			break;
		}
		conn_watch(v, c);
		rx_want(v, c);
		rx_process(v);
	}
	pthread_mutex_unlock(v->env.lock);
}

/* --------------------------------------------------- host -> guest setup */

static bool local_port_used(const struct virtio_vsock *v, uint32_t port)
{
	for (uint32_t i = 0; i < v->npool; i++) {
		const struct vsock_conn *c = v->pool[i];
		if (c->state != CS_FREE && c->hashed && c->local_port == port)
			return true;
	}
	return false;
}

/* Send REQUEST for @c (fd set, not hashed) to guest port @port. */
static void conn_request(struct virtio_vsock *v, struct vsock_conn *c, uint32_t port)
{
	uint32_t p = v->next_port;
	for (;;) {
		if (p < VSOCK_PORT_FIRST || p == UINT32_MAX)
			p = VSOCK_PORT_FIRST;
		if (!local_port_used(v, p))
			break; /* at most VSOCK_MAX_CONNS ports are in use */
		p++;
	}
	v->next_port = p + 1;
	c->local_port = p;
	c->peer_port = port;
	hash_add(v, c);
	c->state = CS_REQUEST;
	c->ctl = CTL_REQUEST;
	conn_watch(v, c); /* nothing watched until the guest answers */
	rx_want(v, c);
}

static bool parse_line(const char *s, uint32_t len, uint32_t *port)
{
	static const char pfx[] = "CONNECT ";
	uint32_t n = sizeof(pfx) - 1;
	if (len <= n || memcmp(s, pfx, n) != 0)
		return false;
	if (len > n && s[len - 1] == '\r')
		len--;
	uint64_t val = 0;
	if (len == n || len - n > 10)
		return false;
	for (uint32_t i = n; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		val = val * 10 + (uint64_t)(s[i] - '0');
	}
	if (val >= UINT32_MAX) /* VMADDR_PORT_ANY and beyond */
		return false;
	*port = (uint32_t)val;
	return true;
}

/* A client of the listening socket: read its CONNECT line, byte by byte so
 * nothing after the newline is consumed. */
static void line_read(struct virtio_vsock *v, struct vsock_conn *c)
{
	for (;;) {
		char ch;
		ssize_t n = recv(c->fd, &ch, 1, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_free(v, c, 0);
			return;
		}
		if (ch == '\n')
			break;
		if (c->line_len >= VSOCK_LINE_MAX - 1) {
			conn_free(v, c, 0);
			return;
		}
		c->line[c->line_len++] = ch;
	}
	uint32_t port;
	if (!parse_line(c->line, c->line_len, &port)) {
		conn_free(v, c, 0);
		return;
	}
	conn_request(v, c, port);
}

static void listen_event(void *opaque, uint32_t events)
{
	struct virtio_vsock *v = opaque;
	(void)events;
	pthread_mutex_lock(v->env.lock);
	for (int i = 0; i < 64 && v->listen_fd >= 0 && v->listen_watched; i++) {
		int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			break; /* EAGAIN, or a client that went away */
		struct vsock_conn *c = conn_alloc(v);
		if (!c) {
			close(fd); /* table full */
			continue;
		}
		c->fd = fd;
		c->state = CS_LINE;
		conn_watch(v, c); /* frees it if it cannot be watched */
	}
	rx_process(v);
	pthread_mutex_unlock(v->env.lock);
}

/* --------------------------------------------------------- guest packets */

/* A REQUEST for a stream we do not have: connect to "<uds_path>_<port>". */
static void guest_request(struct virtio_vsock *v, const struct vsock_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (!v->uds_path || h->dst_port == UINT32_MAX ||
	    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->uds_path, h->dst_port) >=
		    (int)sizeof(sa.sun_path)) {
		reply_rst(v, h);
		return;
	}
	struct vsock_conn *c = conn_alloc(v);
	if (!c) {
		reply_rst(v, h);
		return;
	}
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	hash_add(v, c);
	c->state = CS_CONNECTING;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r = c->fd < 0 ? -1 : connect(c->fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0) {
		c->state = CS_ESTABLISHED;
		c->ctl |= CTL_RESPONSE;
	} else if (c->fd < 0 || errno != EINPROGRESS) {
		conn_reset(v, c, 0); /* RST */
		return;
	}
	conn_watch(v, c);
	rx_want(v, c);
}

/* Guest data for an established stream. */
static void guest_rw(struct virtio_vsock *v, struct vsock_conn *c, const struct vsock_hdr *h,
		     const struct virtq_chain *ch)
{
	/* Credit the guest was given: buf_alloc minus what it sent since the
	 * last fwd_cnt we told it (fwd_sent <= fwd_cnt, so this also bounds the
	 * buffer). */
	uint32_t unacked = c->rx_cnt - c->fwd_sent;
	uint32_t credit = unacked >= VSOCK_BUF_ALLOC ? 0 : VSOCK_BUF_ALLOC - unacked;
	if ((c->guest_shut & VSOCK_SHUTDOWN_SEND) || h->len > credit) {
		conn_reset(v, c, 0); /* data after SHUTDOWN(SEND), or beyond our credit */
		return;
	}
	c->rx_cnt += h->len;
	uint32_t done = 0;
	if (c->blen == 0 && h->len) {
		int k = (int)virtq_iov_slice(ch->iov, chain_nout(ch), VSOCK_HDR_SIZE, h->len, v->iov);
		struct msghdr mh = { .msg_iov = v->iov, .msg_iovlen = (size_t)k };
		ssize_t n;
		do
			n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_reset(v, c, 0);
			return;
		}
		if (n > 0) {
			done = (uint32_t)n;
			c->fwd_cnt += done;
		}
	}
	if (done < h->len &&
	    !buf_append(c, ch, VSOCK_HDR_SIZE + (uint64_t)done, NULL, h->len - done)) {
		vs_warn(v, "virtio-vsock: out of memory buffering a stream");
		conn_reset(v, c, 0);
		return;
	}
	conn_after_write(v, c);
}

static void guest_shutdown(struct virtio_vsock *v, struct vsock_conn *c, uint32_t flags)
{
	flags &= VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;
	uint32_t added = flags & ~c->guest_shut;
	c->guest_shut |= flags;
	if ((added & VSOCK_SHUTDOWN_RCV) && c->fd >= 0) {
		shutdown(c->fd, SHUT_RD);
		c->host_readable = false;
	}
	conn_after_write(v, c); /* SHUT_WR once the buffer is empty; maybe the end */
}

static void on_established(struct virtio_vsock *v, struct vsock_conn *c)
{
	c->state = CS_ESTABLISHED;
	if (c->waiter) {
		waiter_done(v, c, 0);
		return;
	}
	/* Unix client: "OK <host port>\n" before any stream data. */
	char ok[24];
	int n = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
	if (!buf_append(c, NULL, 0, ok, (uint32_t)n)) {
		conn_reset(v, c, 0);
		return;
	}
	c->pre = (uint32_t)n;
	conn_flush(v, c);
}

/* A well-formed packet @h other than RST for the open stream @c. */
static void established_packet(struct virtio_vsock *v, struct vsock_conn *c,
			       const struct vsock_hdr *h, const struct virtq_chain *ch)
{
	switch (h->op) {
	case VSOCK_OP_RW:
		guest_rw(v, c, h, ch);
		break;
	case VSOCK_OP_SHUTDOWN:
		guest_shutdown(v, c, h->flags);
		break;
	case VSOCK_OP_CREDIT_UPDATE:
		break; /* credit taken by conn_packet */
	case VSOCK_OP_CREDIT_REQUEST:
		c->ctl |= CTL_CREDIT;
		break;
	default: /* REQUEST or RESPONSE on an open stream */
		conn_reset(v, c, -ECONNRESET);
		break;
	}
}

/* A well-formed packet @h for the existing connection @c (not closing). */
static void conn_packet(struct virtio_vsock *v, struct vsock_conn *c, const struct vsock_hdr *h,
			const struct virtq_chain *ch)
{
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	if (h->op == VSOCK_OP_RST) {
		conn_free(v, c, c->state == CS_REQUEST ? -ECONNREFUSED : -ECONNRESET);
		return;
	}
	switch (c->state) {
	case CS_REQUEST:
		if (h->op == VSOCK_OP_RESPONSE && c->req_sent)
			on_established(v, c);
		else
			conn_reset(v, c, -ECONNREFUSED);
		break;
	case CS_CONNECTING:
		if (h->op != VSOCK_OP_CREDIT_UPDATE && h->op != VSOCK_OP_CREDIT_REQUEST)
			conn_reset(v, c, 0);
		break;
	case CS_ESTABLISHED:
		established_packet(v, c, h, ch);
		break;
	default:
		break;
	}
	conn_watch(v, c);
	rx_want(v, c);
}

/* One packet from the tx queue. */
static void guest_packet(struct virtio_vsock *v, const struct virtq_chain *ch)
{
	if (ch->out_len < VSOCK_HDR_SIZE)
		return; /* no header: drop */
	uint8_t raw[VSOCK_HDR_SIZE];
	virtq_read(ch, 0, raw, sizeof(raw));
	struct vsock_hdr h;
	vsock_hdr_decode(raw, &h);
	if (h.src_cid != v->guest_cid || h.dst_cid != VSOCK_HOST_CID)
		return; /* not from our guest, or not to the host: drop */

	struct vsock_conn *c = lookup(v, h.dst_port, h.src_port);
	bool bad = h.type != VSOCK_TYPE_STREAM || h.len > VSOCK_MAX_PKT ||
		   h.len > ch->out_len - VSOCK_HDR_SIZE || h.op == VSOCK_OP_INVALID ||
		   h.op > VSOCK_OP_CREDIT_REQUEST;
	if (c && c->state == CS_CLOSING) {
		if (h.op == VSOCK_OP_RST)
			conn_free(v, c, 0);
		else if (h.op == VSOCK_OP_REQUEST && !bad) {
			conn_free(v, c, 0); /* the guest moved on: a new stream */
			c = NULL;
		} else
			return; /* our RST is on its way */
	}
	if (bad) {
		if (c && h.op != VSOCK_OP_RST)
			conn_reset(v, c, -ECONNRESET);
		else if (c)
			conn_free(v, c, -ECONNRESET);
		else
			reply_rst(v, &h);
		return;
	}
	if (!c) {
		if (h.op == VSOCK_OP_REQUEST)
			guest_request(v, &h);
		else
			reply_rst(v, &h);
		return;
	}
	conn_packet(v, c, &h, ch);
}

static void tx_process(struct virtio_vsock *v)
{
	if (!v->live || !v->txq || !v->txq->ready)
		return;
	struct virtq *q = v->txq;
	struct virtq_chain *ch = &v->chain;
	uint32_t pushed = 0;
	for (;;) {
		int r = virtq_pop_or_enable_notify(q, ch);
		if (r < 0) {
			mark_broken(v, "malformed tx ring");
			break;
		}
		if (r == 0)
			break;
		guest_packet(v, ch);
		if (virtq_push(q, ch->head, 0) < 0) {
			mark_broken(v, "tx used ring outside RAM");
			break;
		}
		pushed++;
	}
	if (pushed && v->env.used)
		v->env.used(v->env.opaque, VSOCK_TXQ);
}

/* --------------------------------------------------------------- engine */

struct virtio_vsock *virtio_vsock_new(const struct vsock_env *env, uint64_t guest_cid,
				      const char *uds_path)
{
	struct virtio_vsock *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->env = *env;
	v->guest_cid = guest_cid;
	v->listen_fd = -1;
	v->next_port = VSOCK_PORT_FIRST;
	if (uds_path && !(v->uds_path = strdup(uds_path))) {
		free(v);
		return NULL;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cond, &ca);
	pthread_condattr_destroy(&ca);
	return v;
}

static void unlisten(struct virtio_vsock *v)
{
	if (v->listen_fd < 0)
		return;
	if (v->listen_watched)
		evloop_del(v->env.loop, &v->listen_h);
	v->listen_watched = false;
	/* Remove the socket file if it is still ours. */
	struct stat st = { .st_dev = v->listen_dev, .st_ino = v->listen_ino };
	if (v->uds_path)
		file_unlink_socket_if_ours(v->uds_path, &st);
	close(v->listen_fd);
	v->listen_fd = -1;
}

/* The socket appears at uds_path owner-only (0600) whatever the umask, in one
 * atomic step; see file_listen_unix_private(). */
int virtio_vsock_listen(struct virtio_vsock *v, char *err, size_t errlen)
{
	if (!v->uds_path || v->listen_fd >= 0)
		return 0;
	struct sockaddr_un sa;
	if (strlen(v->uds_path) >= sizeof(sa.sun_path))
		return errbuf_fail(err, errlen, -ENAMETOOLONG, "%s: path too long", v->uds_path);
	struct stat st;
	int fd = file_listen_unix_private(v->uds_path, LISTEN_BACKLOG, &st, err, errlen);
	if (fd < 0)
		return fd;
	v->listen_fd = fd;
	v->listen_dev = st.st_dev;
	v->listen_ino = st.st_ino;
	return 0;
}

void virtio_vsock_free(struct virtio_vsock *v)
{
	if (!v)
		return;
	if (v->env.lock) {
		pthread_mutex_lock(v->env.lock);
		close_all(v, -ECONNRESET);
		while (v->users)
			pthread_cond_wait(&v->cond, v->env.lock);
		pthread_mutex_unlock(v->env.lock);
	}
	close_all(v, -ECONNRESET);
	unlisten(v);
	for (uint32_t i = 0; i < v->npool; i++)
		free(v->pool[i]);
	pthread_cond_destroy(&v->cond);
	free(v->uds_path);
	free(v);
}

void virtio_vsock_start(struct virtio_vsock *v, struct virtq *rx, struct virtq *tx,
			struct virtq *ev)
{
	v->rxq = rx;
	v->txq = tx;
	v->evq = ev;
	v->live = true;
	if (v->listen_fd >= 0 && !v->listen_watched) {
		ev_handler_set(&v->listen_h, v->listen_fd, listen_event, v);
		int r = evloop_add(v->env.loop, &v->listen_h, EPOLLIN);
		if (r == 0)
			v->listen_watched = true;
		else
			vs_warn(v, "virtio-vsock: cannot watch %s: %s", v->uds_path, strerror(-r));
	}
}

void virtio_vsock_stop(struct virtio_vsock *v)
{
	v->live = false;
	v->rxq = v->txq = v->evq = NULL;
	v->event_pending = false;
	close_all(v, -ECONNRESET);
	if (v->listen_watched)
		evloop_del(v->env.loop, &v->listen_h);
	v->listen_watched = false;
}

void virtio_vsock_notify(struct virtio_vsock *v, uint16_t q)
{
	if (q == VSOCK_TXQ)
		tx_process(v);
	else if (q == VSOCK_EVQ)
		ev_process(v);
	/* rx buffers, or replies to tx packets */
	rx_process(v);
}

void virtio_vsock_transport_reset(struct virtio_vsock *v)
{
	pthread_mutex_lock(v->env.lock);
	close_all(v, -ECONNRESET);
	v->event_pending = true;
	ev_process(v);
	pthread_mutex_unlock(v->env.lock);
}

void virtio_vsock_set_cid(struct virtio_vsock *v, uint64_t cid)
{
	pthread_mutex_lock(v->env.lock);
	v->guest_cid = cid;
	pthread_mutex_unlock(v->env.lock);
}

int virtio_vsock_set_uds_path(struct virtio_vsock *v, const char *uds_path)
{
	if ((!uds_path && !v->uds_path) || (uds_path && v->uds_path && !strcmp(uds_path, v->uds_path)))
		return 0;
	char *p = NULL;
	if (uds_path && !(p = strdup(uds_path)))
		return -ENOMEM;
	pthread_mutex_lock(v->env.lock);
	unlisten(v);
	free(v->uds_path);
	v->uds_path = p;
	pthread_mutex_unlock(v->env.lock);
	return 0;
}

static long ms_until(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000L + (deadline->tv_nsec - now.tv_nsec) / 1000000L;
}

static void add_ms(struct timespec *t, long ms)
{
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}


int virtio_vsock_connect(struct virtio_vsock *v, uint32_t port, int timeout_ms,
			 pthread_mutex_t *release)
{
	pthread_mutex_lock(v->env.lock);
	v->users++;
	if (release)
		pthread_mutex_unlock(release);

	int r, sv[2] = { -1, -1 };
	struct vsock_waiter w = { .result = 0 };
	struct vsock_conn *c = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		goto out;
	}
	c = conn_alloc(v);
	if (!c) {
		r = -EAGAIN; /* every stream slot in use */
		goto out;
	}
	int fl = fcntl(sv[0], F_GETFL);
	if (fl < 0 || fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) < 0) {
		r = -errno;
		conn_free(v, c, 0);
		goto out;
	}
	c->fd = sv[0];
	sv[0] = -1; /* the stream owns it now */
	c->waiter = &w;
	w.conn = c;
	conn_request(v, c, port);
	rx_process(v);

	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	if (timeout_ms > 0)
		add_ms(&deadline, timeout_ms);
	while (!w.done) {
		long left = timeout_ms < 0 ? WAIT_SLICE_MS : ms_until(&deadline);
		if (left <= 0)
			break;
		struct timespec slice;
		clock_gettime(CLOCK_MONOTONIC, &slice);
		add_ms(&slice, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
		pthread_cond_timedwait(&v->cond, v->env.lock, &slice);
		if (w.done)
			break;
		/* A stopped VM never answers. */
		pthread_mutex_unlock(v->env.lock);
		bool stopped = host_stopped(v->env.host);
		pthread_mutex_lock(v->env.lock);
		if (stopped && !w.done) {
			conn_reset(v, w.conn, -ECONNRESET);
			break;
		}
	}
	if (!w.done) {
		/* Timed out: cancel (RST if the guest saw the REQUEST). */
		conn_reset(v, w.conn, -ETIMEDOUT);
		rx_process(v);
	}
	r = w.result;
out:
	if (sv[0] >= 0)
		close(sv[0]);
	if (r < 0 && sv[1] >= 0)
		close(sv[1]);
	if (r == 0)
		r = sv[1];
	v->users--;
	if (v->users == 0)
		pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(v->env.lock);
	return r;
}

uint32_t virtio_vsock_nr_conns(const struct virtio_vsock *v)
{
	return nr_conns(v);
}

int virtio_vsock_conn_events(const struct virtio_vsock *v, uint32_t local, uint32_t peer)
{
	const struct vsock_conn *c = lookup(v, local, peer);
	return c ? (int)c->watched : -1;
}

long virtio_vsock_conn_buffered(const struct virtio_vsock *v, uint32_t local, uint32_t peer)
{
	const struct vsock_conn *c = lookup(v, local, peer);
	return c ? (long)c->blen : -1;
}

/* ------------------------------------------------------- transport glue */

static void glue_used(void *opaque, uint16_t q)
{
	virtio_notify_used(opaque, q);
}

static void glue_broken(void *opaque, const char *why)
{
	virtio_set_needs_reset(opaque, why);
}

static void self_notify(struct virtio_device *vdev, uint16_t q)
{
	if (vdev->notify_fd[q] >= 0) {
		uint64_t one = 1;
		ssize_t n = write(vdev->notify_fd[q], &one, sizeof(one));
		(void)n; /* only fails when the counter is saturated: still pending */
	}
}

static void vsock_config_read(void *opaque, uint32_t off, void *data, uint32_t len)
{
	struct virtio_vsock *v = opaque;
	uint8_t cfg[VSOCK_CFG_SIZE];
	put_le64(cfg, v->guest_cid);
	memcpy(data, cfg + off, len); /* the transport checked off + len */
}

static int vsock_activate(void *opaque, struct virtio_device *vdev)
{
	struct virtio_vsock *v = opaque;
	if (!vdev->queues[VSOCK_RXQ].ready || !vdev->queues[VSOCK_TXQ].ready ||
	    !vdev->queues[VSOCK_EVQ].ready)
		return -EINVAL;
	virtio_vsock_start(v, &vdev->queues[VSOCK_RXQ], &vdev->queues[VSOCK_TXQ],
			   &vdev->queues[VSOCK_EVQ]);
	/* Buffers posted before DRIVER_OK, and requests made meanwhile, are
	 * handled on the event loop thread. */
	for (uint16_t q = 0; q < VSOCK_NUM_QUEUES; q++)
		self_notify(vdev, q);
	return 0;
}

static void vsock_notify(void *opaque, struct virtio_device *vdev, uint16_t q)
{
	(void)vdev;
	virtio_vsock_notify(opaque, q);
}

static void vsock_reset(void *opaque)
{
	virtio_vsock_stop(opaque);
}

/* The guest is gone: a host peer of an open stream gets its end (EOF or
 * ECONNRESET) now instead of waiting for an answer that cannot come. */
static void vsock_vm_stopped(void *opaque)
{
	struct virtio_vsock *v = opaque;
	close_all(v, -ECONNRESET);
}

static void vsock_release(void *opaque)
{
	struct virtio_vsock *v = opaque;
	if (!v)
		return;
	virtio_vsock_free(v);
}

/*
 * A restored VM. Its guest still believes in the streams the snapshot
 * caught, which exist nowhere here: the first packet it sends on one gets an
 * RST, which closes it. Host ports continue after the snapshot's, so a new
 * stream never lands on such a stale socket.
 *
 * If the caller gave the clone another CID, the guest learns it from a
 * TRANSPORT_RESET event (Linux then re-reads the config space and resets
 * its connected sockets). Only then: with Linux 6.1 guests we saw a process
 * polling a listening socket not being woken for connections the kernel
 * had accepted after that event (the guest agent therefore polls with a
 * timeout), so the default restore keeps the CID and sends no event.
 * Transport lock held.
 */
static int vsock_load(void *opaque, struct virtio_device *vdev, const void *fdt, int node,
		      char *err, size_t errlen)
{
	struct virtio_vsock *v = opaque;
	(void)vdev;
	uint32_t next;
	uint64_t cid;
	int r = st_get_u32(fdt, node, "next-port", &next, err, errlen);
	if (r == 0)
		r = st_get_u64(fdt, node, "guest-cid", &cid, err, errlen);
	if (r < 0)
		return r;
	close_all(v, -ECONNRESET);
	v->next_port = next >= VSOCK_PORT_FIRST && next < UINT32_MAX ? next : VSOCK_PORT_FIRST;
	v->event_pending = cid != v->guest_cid;
	return 0;
}

static void vsock_save(void *opaque, struct st_writer *w, int node)
{
	struct virtio_vsock *v = opaque;
	st_u32(w, node, "next-port", v->next_port);
	st_u64(w, node, "guest-cid", v->guest_cid);
	if (v->uds_path)
		st_str(w, node, "uds-path", v->uds_path);
}

int virtio_vsock_config_from_state(const void *fdt, int node, uint64_t *cid,
				   const char **uds_path, char *err, size_t errlen)
{
	*uds_path = st_get_str(fdt, node, "uds-path");
	return st_get_u64(fdt, node, "guest-cid", cid, err, errlen);
}

const struct virtio_device_ops virtio_vsock_ops = {
	.name = "virtio-vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.features = 0,
	.num_queues = VSOCK_NUM_QUEUES,
	.config_size = VSOCK_CFG_SIZE,
	.config_read = vsock_config_read,
	.activate = vsock_activate,
	.notify = vsock_notify,
	.reset = vsock_reset,
	.release = vsock_release,
	.save = vsock_save,
	.load = vsock_load,
	.vm_stopped = vsock_vm_stopped,
};

int virtio_vsock_device_new(const struct dev_host *host, uint64_t cid, const char *uds_path,
			    struct virtio_vsock **out, char *err, size_t errlen)
{
	struct vsock_env env = {
		.host = host, .loop = host->loop, .used = glue_used, .broken = glue_broken,
	};
	struct virtio_vsock *v = virtio_vsock_new(&env, cid, uds_path);
	if (!v)
		return errbuf_fail(err, errlen, -ENOMEM, "virtio-vsock: out of memory");
	int r = virtio_vsock_listen(v, err, errlen);
	if (r < 0) {
		virtio_vsock_free(v);
		return r;
	}
	*out = v;
	return 0;
}

void virtio_vsock_attach(struct virtio_vsock *v, struct virtio_device *vdev)
{
	v->vdev = vdev;
	v->env.lock = &vdev->lock;
	v->env.opaque = vdev;
}

bool virtio_vsock_attached(const struct virtio_vsock *v)
{
	return v->env.lock != NULL;
}

int virtio_vsock_reconfigure(struct virtio_vsock *v, uint64_t cid, const char *uds_path,
			     char *err, size_t errlen)
{
	virtio_vsock_set_cid(v, cid);
	int r = virtio_vsock_set_uds_path(v, uds_path);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "virtio-vsock: %s", strerror(-r));
	return virtio_vsock_listen(v, err, errlen);
}
