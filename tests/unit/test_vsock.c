/*
 * Unit tests for virtio-vsock (lib/virtio/vsock.c), no /dev/kvm.
 *
 * A fake driver keeps the rx, tx and event rings in a 32 MiB guest RAM; the
 * engine watches its host fds in a manual event loop (no thread): pump()
 * runs its handlers with evloop_poll(), so every step is deterministic. Host sides are real AF_UNIX sockets in a temporary
 * directory. alarm() guards against anything blocking.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bus.h"
#include "evloop.h"
#include "arch/arch.h"
#include "memory.h"
#include "virtio/devices.h"
#include "vm_devices.h"
#include "virtio/mmio.h"
#include "virtio/queue.h"
#include "virtio/vsock.h"
#include "vm.h"

#define RAM (32 * MIB)
#define QSIZE 256
#define NSLOT 128 /* chains outstanding per ring; two descriptors each */
#define SLOT_SIZE (72u * 1024u)
#define PAYLOAD_OFF 64u /* payload descriptor of a 2-descriptor chain */
#define RX_BUF 4096u    /* rx payload buffer, as Linux posts */
#define GUEST_CID 3u
#define F_NEXT 1
#define F_WRITE 2

/* ---------------------------------------------------------- fake driver */

struct ring {
	struct virtq q;
	uint16_t aidx;  /* driver's avail->idx */
	uint16_t useen; /* used entries consumed */
	uint64_t bufs;  /* slot buffers */
};

struct fx {
	struct guest_mem mem;
	struct ring rx, tx, ev;
	struct evloop loop;
	pthread_mutex_t lock;
	struct virtio_vsock *v;
	uint32_t used_calls[3];
	int broken;
	char dir[64];
	char uds[80];
};

struct pkt {
	struct vsock_hdr h;
	uint32_t n; /* payload bytes */
	uint8_t data[VSOCK_MAX_PKT];
};

static uint8_t *gpa(struct fx *f, uint64_t addr, uint64_t len)
{
	uint8_t *p = gm_ptr(&f->mem, addr, len);
	assert_non_null(p);
	return p;
}

static void put16(struct fx *f, uint64_t a, uint16_t x) { memcpy(gpa(f, a, 2), &x, 2); }
static uint16_t get16(struct fx *f, uint64_t a) { uint16_t x; memcpy(&x, gpa(f, a, 2), 2); return x; }
static uint32_t get32(struct fx *f, uint64_t a) { uint32_t x; memcpy(&x, gpa(f, a, 4), 4); return x; }

static void ring_init(struct fx *f, struct ring *r, uint64_t base, uint64_t bufs)
{
	memset(gpa(f, base, 0x8000), 0, 0x8000);
	memset(r, 0, sizeof(*r));
	r->q.mem = &f->mem;
	r->q.size = QSIZE;
	r->q.desc_gpa = base;
	r->q.avail_gpa = base + 0x1000;
	r->q.used_gpa = base + 0x2000;
	r->q.ready = true;
	r->bufs = bufs;
	assert_int_equal(virtq_activate(&r->q), 0);
}

static uint16_t used_idx(struct fx *f, struct ring *r)
{
	return get16(f, r->q.used_gpa + 2);
}

static uint64_t slot_addr(struct ring *r, uint32_t slot)
{
	return r->bufs + (uint64_t)slot * SLOT_SIZE;
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Make a chain of one or two segments available; returns its slot. */
static uint32_t post(struct fx *f, struct ring *r, const struct seg *s, unsigned n)
{
	assert_true(n >= 1 && n <= 2);
	assert_true((uint16_t)(r->aidx - used_idx(f, r)) < NSLOT);
	uint32_t slot = r->aidx % NSLOT;
	uint16_t head = (uint16_t)(2 * slot);
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)(head + i);
		uint16_t flags = (uint16_t)((s[i].write ? F_WRITE : 0) | (i + 1 < n ? F_NEXT : 0));
		uint16_t next = (uint16_t)(idx + 1);
		uint8_t *p = gpa(f, r->q.desc_gpa + 16ULL * idx, 16);
		memcpy(p, &s[i].gpa, 8);
		memcpy(p + 8, &s[i].len, 4);
		memcpy(p + 12, &flags, 2);
		memcpy(p + 14, &next, 2);
	}
	put16(f, r->q.avail_gpa + 4 + 2ULL * (r->aidx % QSIZE), head);
	r->aidx++;
	put16(f, r->q.avail_gpa + 2, r->aidx);
	return slot;
}

static void notify(struct fx *f, uint16_t q)
{
	pthread_mutex_lock(&f->lock);
	virtio_vsock_notify(f->v, q);
	pthread_mutex_unlock(&f->lock);
}

/* Post @n rx buffers of header + @size bytes (two descriptors). */
static void post_rx_n(struct fx *f, unsigned n, uint32_t size, bool kick)
{
	for (unsigned i = 0; i < n; i++) {
		uint32_t slot = f->rx.aidx % NSLOT;
		struct seg s[2] = { { slot_addr(&f->rx, slot), VSOCK_HDR_SIZE, true },
				    { slot_addr(&f->rx, slot) + PAYLOAD_OFF, size, true } };
		post(f, &f->rx, s, 2);
	}
	if (kick)
		notify(f, VSOCK_RXQ);
}

static void post_rx(struct fx *f, unsigned n)
{
	post_rx_n(f, n, RX_BUF, true);
}

static struct vsock_hdr ghdr(uint16_t op, uint32_t src_port, uint32_t dst_port)
{
	struct vsock_hdr h = {
		.src_cid = GUEST_CID, .dst_cid = VSOCK_HOST_CID, .src_port = src_port,
		.dst_port = dst_port, .type = VSOCK_TYPE_STREAM, .op = op,
		.buf_alloc = 256 * 1024, .fwd_cnt = 0,
	};
	return h;
}

/* Put a raw tx chain of @len bytes (already encoded) and notify. */
static void send_raw(struct fx *f, const void *bytes, uint32_t len, bool split)
{
	uint32_t slot = f->tx.aidx % NSLOT;
	uint64_t a = slot_addr(&f->tx, slot);
	assert_true(len <= SLOT_SIZE - PAYLOAD_OFF);
	if (split && len > VSOCK_HDR_SIZE) {
		memcpy(gpa(f, a, VSOCK_HDR_SIZE), bytes, VSOCK_HDR_SIZE);
		memcpy(gpa(f, a + PAYLOAD_OFF, len - VSOCK_HDR_SIZE),
		       (const uint8_t *)bytes + VSOCK_HDR_SIZE, len - VSOCK_HDR_SIZE);
		struct seg s[2] = { { a, VSOCK_HDR_SIZE, false },
				    { a + PAYLOAD_OFF, len - VSOCK_HDR_SIZE, false } };
		post(f, &f->tx, s, 2);
	} else {
		if (len)
			memcpy(gpa(f, a, len), bytes, len);
		struct seg s = { a, len, false };
		post(f, &f->tx, &s, 1);
	}
	notify(f, VSOCK_TXQ);
}

/* Send header @h with @n payload bytes (h.len = @n unless @keep_len). */
static void send_pkt(struct fx *f, struct vsock_hdr h, const void *data, uint32_t n,
		     bool keep_len)
{
	static uint8_t buf[VSOCK_HDR_SIZE + 2 * VSOCK_MAX_PKT];
	assert_true(n <= 2 * VSOCK_MAX_PKT);
	if (!keep_len)
		h.len = n;
	vsock_hdr_encode(&h, buf);
	if (n)
		memcpy(buf + VSOCK_HDR_SIZE, data, n);
	send_raw(f, buf, VSOCK_HDR_SIZE + n, n > 0 && (n & 1));
	/* tx chains are always returned at once */
	assert_int_equal(used_idx(f, &f->tx), f->tx.aidx);
}

static void send_op(struct fx *f, uint16_t op, uint32_t src, uint32_t dst, uint32_t flags)
{
	struct vsock_hdr h = ghdr(op, src, dst);
	h.flags = flags;
	send_pkt(f, h, NULL, 0, false);
}

/* Take the next packet the device put in the rx ring. */
static bool recv_pkt(struct fx *f, struct pkt *p)
{
	pthread_mutex_lock(&f->lock);
	bool got = used_idx(f, &f->rx) != f->rx.useen;
	if (got) {
		uint64_t e = f->rx.q.used_gpa + 4 + 8ULL * (f->rx.useen % QSIZE);
		uint32_t id = get32(f, e), len = get32(f, e + 4);
		f->rx.useen++;
		assert_true(id % 2 == 0 && id / 2 < NSLOT);
		assert_true(len >= VSOCK_HDR_SIZE);
		uint64_t a = slot_addr(&f->rx, id / 2);
		vsock_hdr_decode(gpa(f, a, VSOCK_HDR_SIZE), &p->h);
		p->n = len - VSOCK_HDR_SIZE;
		assert_int_equal(p->h.len, p->n);
		assert_true(p->n <= VSOCK_MAX_PKT);
		if (p->n)
			memcpy(p->data, gpa(f, a + PAYLOAD_OFF, p->n), p->n);
		assert_int_equal(p->h.src_cid, VSOCK_HOST_CID);
		assert_int_equal(p->h.dst_cid, GUEST_CID);
		assert_int_equal(p->h.type, VSOCK_TYPE_STREAM);
	}
	pthread_mutex_unlock(&f->lock);
	return got;
}

static void expect_pkt(struct fx *f, struct pkt *p, uint16_t op, uint32_t src, uint32_t dst)
{
	if (!recv_pkt(f, p))
		fail_msg("no packet (expected op %u)", op);
	if (p->h.op != op)
		fail_msg("op %u, expected %u", p->h.op, op);
	assert_int_equal(p->h.src_port, src);
	assert_int_equal(p->h.dst_port, dst);
}

static void expect_none(struct fx *f)
{
	struct pkt *p = malloc(sizeof(*p));
	assert_non_null(p);
	if (recv_pkt(f, p))
		fail_msg("unexpected packet op %u %u->%u", p->h.op, p->h.src_port, p->h.dst_port);
	free(p);
}

/* Run the handlers of whatever the loop has ready. Returns the number of
 * events handled. */
static int pump(struct fx *f)
{
	int total = 0;
	for (int round = 0; round < 1000; round++) {
		int n = evloop_poll(&f->loop, 0);
		assert_true(n >= 0);
		if (n == 0)
			return total;
		total += n;
	}
	fail_msg("event loop never went idle");
	return total;
}

/* ------------------------------------------------------------- fixtures */

static void env_used(void *opaque, uint16_t q)
{
	struct fx *f = opaque;
	assert_true(q < 3);
	f->used_calls[q]++;
}

static void env_broken(void *opaque, const char *why)
{
	struct fx *f = opaque;
	(void)why;
	f->broken++;
}

static struct virtio_vsock *engine(struct fx *f, const char *uds)
{
	struct vsock_env env = { .loop = &f->loop, .lock = &f->lock, .used = env_used,
				 .broken = env_broken, .opaque = f };
	struct virtio_vsock *v = virtio_vsock_new(&env, GUEST_CID, uds);
	assert_non_null(v);
	char err[256];
	assert_int_equal(virtio_vsock_listen(v, err, sizeof(err)), 0);
	return v;
}

static void start(struct fx *f)
{
	pthread_mutex_lock(&f->lock);
	virtio_vsock_start(f->v, &f->rx.q, &f->tx.q, &f->ev.q);
	pthread_mutex_unlock(&f->lock);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(arch_ram_init(&f->mem, RAM), 0);
	ring_init(f, &f->rx, 0x10000, 0x100000);
	ring_init(f, &f->tx, 0x20000, 0x100000 + NSLOT * SLOT_SIZE);
	ring_init(f, &f->ev, 0x30000, 0x100000 + 2 * NSLOT * SLOT_SIZE);
	assert_int_equal(evloop_init_manual(&f->loop), 0);
	pthread_mutex_init(&f->lock, NULL);
	snprintf(f->dir, sizeof(f->dir), "/tmp/vsock-test-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uds, sizeof(f->uds), "%s/v.sock", f->dir);
	f->v = engine(f, f->uds);
	start(f);
	signal(SIGPIPE, SIG_IGN);
	alarm(60);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	alarm(0);
	virtio_vsock_free(f->v);
	struct stat st;
	assert_int_equal(stat(f->uds, &st), -1); /* the socket file is gone */
	evloop_release(&f->loop);
	pthread_mutex_destroy(&f->lock);
	gm_release(&f->mem);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static uint32_t nconns(struct fx *f)
{
	pthread_mutex_lock(&f->lock);
	uint32_t n = virtio_vsock_nr_conns(f->v);
	pthread_mutex_unlock(&f->lock);
	return n;
}

static int conn_events(struct fx *f, uint32_t local, uint32_t peer)
{
	pthread_mutex_lock(&f->lock);
	int e = virtio_vsock_conn_events(f->v, local, peer);
	pthread_mutex_unlock(&f->lock);
	return e;
}

/* A Unix listener at "<uds>_<port>" (the embedder's service). */
static int service(struct fx *f, uint32_t port)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", f->uds, port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 128), 0);
	return fd;
}

static int accept_nb(int lfd)
{
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

static void set_nonblock(int fd)
{
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Read exactly @n bytes (non-blocking fd; pumps the engine meanwhile). */
static void read_all(struct fx *f, int fd, void *dst, size_t n)
{
	size_t got = 0;
	for (int i = 0; got < n && i < 100000; i++) {
		ssize_t r = read(fd, (uint8_t *)dst + got, n - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		assert_true(r < 0 && errno == EAGAIN);
		pump(f);
		usleep(100);
	}
	assert_int_equal(got, n);
}

/* End of file, or ECONNRESET when the device closed with unread data. */
static void expect_eof(int fd)
{
	char c;
	for (int i = 0; i < 1000; i++) {
		ssize_t r = read(fd, &c, 1);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return;
		assert_true(r < 0 && errno == EAGAIN);
		usleep(1000);
	}
	fail_msg("no end of file");
}

/* Guest connects from port @gport to host port @hport; returns the host fd. */
static int guest_connect(struct fx *f, int lfd, uint32_t gport, uint32_t hport)
{
	struct pkt *p = malloc(sizeof(*p));
	assert_non_null(p);
	post_rx(f, 1);
	send_op(f, VSOCK_OP_REQUEST, gport, hport, 0);
	expect_pkt(f, p, VSOCK_OP_RESPONSE, hport, gport);
	assert_int_equal(p->h.buf_alloc, VSOCK_BUF_ALLOC);
	assert_int_equal(p->h.fwd_cnt, 0);
	free(p);
	int fd = accept_nb(lfd);
	assert_true(fd >= 0);
	return fd;
}

/* ------------------------------------------------------------------ tests */

static void test_hdr_codec(void **state)
{
	(void)state;
	struct vsock_hdr h = { 0x1122334455667788ULL, 2, 0xa1a2a3a4, 0xb1b2b3b4, 0xc1c2c3c4,
			       0xd1d2, 0xe1e2, 0xf1f2f3f4, 0x01020304, 0x05060708 };
	uint8_t raw[VSOCK_HDR_SIZE];
	vsock_hdr_encode(&h, raw);
	assert_int_equal(raw[0], 0x88);
	assert_int_equal(raw[7], 0x11);
	assert_int_equal(raw[8], 2);
	assert_int_equal(raw[16], 0xa4);
	assert_int_equal(raw[24], 0xc4);
	assert_int_equal(raw[28], 0xd2);
	assert_int_equal(raw[30], 0xe2);
	assert_int_equal(raw[43], 0x05);
	struct vsock_hdr d;
	vsock_hdr_decode(raw, &d);
	assert_true(d.src_cid == h.src_cid && d.dst_cid == h.dst_cid);
	assert_true(d.src_port == h.src_port && d.dst_port == h.dst_port && d.len == h.len);
	assert_true(d.type == h.type && d.op == h.op && d.flags == h.flags);
	assert_true(d.buf_alloc == h.buf_alloc && d.fwd_cnt == h.fwd_cnt);
}

static void test_guest_connect_refused(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	post_rx(f, 2);
	send_op(f, VSOCK_OP_REQUEST, 40000, 5000, 0); /* nobody at <uds>_5000 */
	expect_pkt(f, p, VSOCK_OP_RST, 5000, 40000);
	assert_int_equal(nconns(f), 0);

	/* An engine without uds_path refuses everything. */
	virtio_vsock_free(f->v);
	f->v = engine(f, NULL);
	start(f);
	send_op(f, VSOCK_OP_REQUEST, 40001, 1234, 0);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40001);
	assert_int_equal(nconns(f), 0);
	assert_int_equal(f->broken, 0);
	free(p);
}

static void test_guest_to_host(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int fd = guest_connect(f, lfd, 40000, 1234);
	assert_int_equal(nconns(f), 1);
	assert_int_equal(conn_events(f, 1234, 40000), EPOLLIN);

	/* guest -> host, one and two descriptors */
	struct vsock_hdr h = ghdr(VSOCK_OP_RW, 40000, 1234);
	send_pkt(f, h, "hello", 5, false);
	send_pkt(f, h, "world!", 6, false);
	char buf[64];
	read_all(f, fd, buf, 11);
	assert_memory_equal(buf, "helloworld!", 11);

	/* host -> guest */
	assert_int_equal(write(fd, "pong", 4), 4);
	post_rx(f, 1);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_RW, 1234, 40000);
	assert_int_equal(p->n, 4);
	assert_memory_equal(p->data, "pong", 4);
	assert_int_equal(p->h.fwd_cnt, 11); /* what the host fd took */
	assert_int_equal(p->h.buf_alloc, VSOCK_BUF_ALLOC);

	/* CREDIT_REQUEST -> CREDIT_UPDATE */
	post_rx(f, 1);
	send_op(f, VSOCK_OP_CREDIT_REQUEST, 40000, 1234, 0);
	expect_pkt(f, p, VSOCK_OP_CREDIT_UPDATE, 1234, 40000);
	assert_int_equal(p->h.fwd_cnt, 11);

	/* Guest closes: SHUTDOWN(RCV|SEND) -> host EOF, device RST. */
	post_rx(f, 1);
	send_op(f, VSOCK_OP_SHUTDOWN, 40000, 1234, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	expect_eof(fd);
	assert_int_equal(nconns(f), 0);
	expect_none(f);
	assert_int_equal(f->broken, 0);
	close(fd);
	close(lfd);
	free(p);
}

/* Half-close: guest SHUTDOWN(SEND), host still writes, then host closes. */
static void test_half_close(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int fd = guest_connect(f, lfd, 40000, 1234);
	send_op(f, VSOCK_OP_SHUTDOWN, 40000, 1234, VSOCK_SHUTDOWN_SEND);
	expect_eof(fd);
	assert_int_equal(nconns(f), 1);
	assert_int_equal(write(fd, "late", 4), 4);
	post_rx(f, 4);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_RW, 1234, 40000);
	assert_memory_equal(p->data, "late", 4);
	close(fd); /* host done too: SHUTDOWN(SEND), then RST */
	pump(f);
	expect_pkt(f, p, VSOCK_OP_SHUTDOWN, 1234, 40000);
	assert_int_equal(p->h.flags, VSOCK_SHUTDOWN_SEND);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	assert_int_equal(nconns(f), 0);

	/* Host end vanishes while the guest sends: RST. */
	fd = guest_connect(f, lfd, 40001, 1234);
	close(fd);
	post_rx(f, 1);
	send_pkt(f, ghdr(VSOCK_OP_RW, 40001, 1234), "x", 1, false);
	pump(f);
	bool rst = false;
	while (recv_pkt(f, p))
		rst |= p->h.op == VSOCK_OP_RST;
	assert_true(rst);
	assert_int_equal(nconns(f), 0);

	/* Guest RST: the host fd is closed, no reply. */
	fd = guest_connect(f, lfd, 40002, 1234);
	post_rx(f, 1);
	send_op(f, VSOCK_OP_RST, 40002, 1234, 0);
	expect_eof(fd);
	expect_none(f);
	assert_int_equal(nconns(f), 0);
	close(fd);
	close(lfd);
	free(p);
}

static int uds_client(struct fx *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->uds);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	set_nonblock(fd);
	return fd;
}

static void test_host_connect_line(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	post_rx(f, 8);
	int c = uds_client(f);
	/* the line may arrive in pieces; bytes after it are stream data */
	assert_int_equal(write(c, "CONN", 4), 4);
	pump(f);
	expect_none(f);
	assert_int_equal(write(c, "ECT 80\nearly", 12), 12);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_REQUEST, VSOCK_PORT_FIRST, 80);
	assert_int_equal(p->h.buf_alloc, VSOCK_BUF_ALLOC);
	send_op(f, VSOCK_OP_RESPONSE, 80, VSOCK_PORT_FIRST, 0);
	char buf[64];
	read_all(f, c, buf, 8);
	assert_memory_equal(buf, "OK 1024\n", 8);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_RW, VSOCK_PORT_FIRST, 80);
	assert_int_equal(p->n, 5);
	assert_memory_equal(p->data, "early", 5);
	send_pkt(f, ghdr(VSOCK_OP_RW, 80, VSOCK_PORT_FIRST), "abc", 3, false);
	read_all(f, c, buf, 3);
	assert_memory_equal(buf, "abc", 3);
	/* The own "OK" line is not guest data: fwd_cnt counts 3. */
	send_op(f, VSOCK_OP_CREDIT_REQUEST, 80, VSOCK_PORT_FIRST, 0);
	expect_pkt(f, p, VSOCK_OP_CREDIT_UPDATE, VSOCK_PORT_FIRST, 80);
	assert_int_equal(p->h.fwd_cnt, 3);

	/* A second client gets the next port; the guest refuses it. */
	int c2 = uds_client(f);
	assert_int_equal(write(c2, "CONNECT 81\r\n", 12), 12);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_REQUEST, VSOCK_PORT_FIRST + 1, 81);
	send_op(f, VSOCK_OP_RST, 81, VSOCK_PORT_FIRST + 1, 0);
	expect_eof(c2);
	close(c2);

	/* Client closes: SHUTDOWN(SEND); guest closes too: RST. */
	close(c);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_SHUTDOWN, VSOCK_PORT_FIRST, 80);
	assert_int_equal(p->h.flags, VSOCK_SHUTDOWN_SEND);
	send_op(f, VSOCK_OP_SHUTDOWN, 80, VSOCK_PORT_FIRST,
		VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	expect_pkt(f, p, VSOCK_OP_RST, VSOCK_PORT_FIRST, 80);
	assert_int_equal(nconns(f), 0);

	/* Bad lines: closed without a REQUEST. */
	static const char *bad[] = { "HELLO 80\n", "CONNECT\n", "CONNECT \n", "CONNECT x1\n",
				     "CONNECT 4294967295\n", "CONNECT 99999999999\n",
				     "CONNECT 1 2\n", "CONNECT 000000000000000000000000000001\n" };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int b = uds_client(f);
		assert_int_equal(write(b, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		pump(f);
		expect_eof(b);
		close(b);
	}
	/* No newline within the bound. */
	int b = uds_client(f);
	char longline[100];
	memset(longline, '1', sizeof(longline));
	assert_int_equal(write(b, longline, sizeof(longline)), (ssize_t)sizeof(longline));
	pump(f);
	expect_eof(b);
	close(b);
	/* A client that leaves before its line is done. */
	b = uds_client(f);
	assert_int_equal(write(b, "CONNECT 8", 9), 9);
	pump(f);
	assert_int_equal(nconns(f), 1);
	close(b);
	pump(f);
	assert_int_equal(nconns(f), 0);
	expect_none(f);
	assert_int_equal(f->broken, 0);
	free(p);
}

struct connect_call {
	struct fx *f;
	uint32_t port;
	int timeout;
	int result;
	pthread_t t;
};

static void *connect_thread(void *arg)
{
	struct connect_call *cc = arg;
	cc->result = virtio_vsock_connect(cc->f->v, cc->port, cc->timeout, NULL);
	return NULL;
}

static void connect_start(struct connect_call *cc, struct fx *f, uint32_t port, int timeout)
{
	*cc = (struct connect_call){ .f = f, .port = port, .timeout = timeout, .result = 1 };
	assert_int_equal(pthread_create(&cc->t, NULL, connect_thread, cc), 0);
}

/* Wait for the REQUEST the connecting thread sends. */
static void wait_request(struct fx *f, struct pkt *p, uint32_t port)
{
	for (int i = 0; i < 5000; i++) {
		if (recv_pkt(f, p)) {
			assert_int_equal(p->h.op, VSOCK_OP_REQUEST);
			assert_int_equal(p->h.dst_port, port);
			return;
		}
		usleep(1000);
	}
	fail_msg("no REQUEST");
}

static void test_host_connect_inproc(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	struct connect_call cc;
	post_rx(f, 8);
	connect_start(&cc, f, 7000, 5000);
	wait_request(f, p, 7000);
	uint32_t hp = p->h.src_port;
	send_op(f, VSOCK_OP_RESPONSE, 7000, hp, 0);
	pthread_join(cc.t, NULL);
	int fd = cc.result;
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(write(fd, "ping", 4), 4);
	pump(f);
	expect_pkt(f, p, VSOCK_OP_RW, hp, 7000);
	assert_memory_equal(p->data, "ping", 4);
	send_pkt(f, ghdr(VSOCK_OP_RW, 7000, hp), "pong", 4, false);
	set_nonblock(fd);
	char buf[8];
	read_all(f, fd, buf, 4);
	assert_memory_equal(buf, "pong", 4);
	close(fd); /* the guest sees end of file */
	pump(f);
	expect_pkt(f, p, VSOCK_OP_SHUTDOWN, hp, 7000);
	assert_int_equal(p->h.flags, VSOCK_SHUTDOWN_SEND);
	send_op(f, VSOCK_OP_SHUTDOWN, 7000, hp, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	expect_pkt(f, p, VSOCK_OP_RST, hp, 7000);
	assert_int_equal(nconns(f), 0);

	/* Refused. */
	connect_start(&cc, f, 7001, 5000);
	wait_request(f, p, 7001);
	send_op(f, VSOCK_OP_RST, 7001, p->h.src_port, 0);
	pthread_join(cc.t, NULL);
	assert_int_equal(cc.result, -ECONNREFUSED);
	assert_int_equal(nconns(f), 0);

	/* Timeout after the guest saw the REQUEST: RST to cancel it. */
	connect_start(&cc, f, 7002, 50);
	wait_request(f, p, 7002);
	hp = p->h.src_port;
	pthread_join(cc.t, NULL);
	assert_int_equal(cc.result, -ETIMEDOUT);
	expect_pkt(f, p, VSOCK_OP_RST, hp, 7002);
	assert_int_equal(nconns(f), 0);
	/* A late RESPONSE gets an RST reply (no such stream). */
	send_op(f, VSOCK_OP_RESPONSE, 7002, hp, 0);
	expect_pkt(f, p, VSOCK_OP_RST, hp, 7002);

	/* Timeout before the guest saw it (no rx buffer): nothing sent. */
	while (recv_pkt(f, p))
		;
	while (f->rx.aidx != used_idx(f, &f->rx)) {
		send_op(f, VSOCK_OP_RW, 1, 2, 0); /* RST replies use up the buffers */
		expect_pkt(f, p, VSOCK_OP_RST, 2, 1);
	}
	assert_int_equal(virtio_vsock_connect(f->v, 7003, 30, NULL), -ETIMEDOUT);
	assert_int_equal(virtio_vsock_connect(f->v, 7003, 0, NULL), -ETIMEDOUT);
	assert_int_equal(nconns(f), 0);
	post_rx(f, 2);
	expect_none(f);

	/* A device reset fails a waiting connect. */
	connect_start(&cc, f, 7004, -1);
	wait_request(f, p, 7004);
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	pthread_mutex_unlock(&f->lock);
	pthread_join(cc.t, NULL);
	assert_int_equal(cc.result, -ECONNRESET);
	assert_int_equal(nconns(f), 0);
	assert_int_equal(f->broken, 0);
	free(p);
}

/* Host data waits while the guest has no rx buffers or no credit. */
static void test_credit_host_to_guest(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	/* The guest advertises 8 KiB of receive buffer. */
	post_rx(f, 1);
	struct vsock_hdr h = ghdr(VSOCK_OP_REQUEST, 40000, 1234);
	h.buf_alloc = 8192;
	send_pkt(f, h, NULL, 0, false);
	expect_pkt(f, p, VSOCK_OP_RESPONSE, 1234, 40000);
	int fd = accept_nb(lfd);
	assert_true(fd >= 0);

	/* The host fills its socket. */
	static uint8_t junk[65536];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7);
	size_t written = 0;
	for (;;) {
		ssize_t n = write(fd, junk, sizeof(junk));
		if (n <= 0)
			break;
		written += (size_t)n;
	}
	assert_true(written > 65536);

	/* No rx buffers: one wakeup, then the fd is not polled any more. */
	assert_true(pump(f) >= 1);
	assert_int_equal(pump(f), 0);
	assert_int_equal(conn_events(f, 1234, 40000), 0);
	expect_none(f);

	/* Plenty of buffers, but only 8 KiB of credit. */
	post_rx(f, 16);
	uint32_t got = 0;
	while (recv_pkt(f, p)) {
		assert_int_equal(p->h.op, VSOCK_OP_RW);
		assert_true(p->n <= RX_BUF);
		got += p->n;
	}
	assert_int_equal(got, 8192);
	assert_int_equal(pump(f), 0);
	assert_int_equal(conn_events(f, 1234, 40000), 0);

	/* The guest read 4 KiB: 4 KiB more. */
	h = ghdr(VSOCK_OP_CREDIT_UPDATE, 40000, 1234);
	h.buf_alloc = 8192;
	h.fwd_cnt = 4096;
	send_pkt(f, h, NULL, 0, false);
	pump(f);
	got = 0;
	while (recv_pkt(f, p))
		got += p->n;
	assert_int_equal(got, 4096);

	/* A big credit and big buffers: payloads up to VSOCK_MAX_PKT. */
	h.buf_alloc = 1u << 30;
	h.fwd_cnt = 8192 + 4096;
	send_pkt(f, h, NULL, 0, false);
	post_rx_n(f, 8, VSOCK_MAX_PKT + 1000, true);
	pump(f);
	uint32_t maxn = 0;
	while (recv_pkt(f, p)) {
		got += p->n;
		if (p->n > maxn)
			maxn = p->n;
	}
	assert_true(maxn <= VSOCK_MAX_PKT);
	assert_true(maxn > RX_BUF);
	/* Header-only rx buffers while data waits: credit updates, no spin. */
	for (int i = 0; i < 100 && f->rx.aidx != used_idx(f, &f->rx); i++) {
		while (write(fd, junk, sizeof(junk)) > 0)
			;
		pump(f);
		while (recv_pkt(f, p))
			;
	}
	assert_int_equal(f->rx.aidx, used_idx(f, &f->rx)); /* no rx buffer left */
	while (write(fd, junk, sizeof(junk)) > 0)
		;
	pump(f);
	post_rx_n(f, 3, 0, true);
	for (int i = 0; i < 3; i++)
		expect_pkt(f, p, VSOCK_OP_CREDIT_UPDATE, 1234, 40000);
	expect_none(f);
	post_rx(f, 1);
	expect_pkt(f, p, VSOCK_OP_RW, 1234, 40000);
	assert_int_equal(p->n, RX_BUF);
	assert_int_equal(f->broken, 0);
	close(fd);
	close(lfd);
	free(p);
}

/* Guest -> host: buffering is bounded by the credit; overrun = RST. */
static void test_credit_guest_to_host(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int fd = guest_connect(f, lfd, 40000, 1234);
	static uint8_t data[VSOCK_MAX_PKT];
	memset(data, 0x5a, sizeof(data));
	struct vsock_hdr h = ghdr(VSOCK_OP_RW, 40000, 1234);
	/* The host does not read: the socket fills, the rest is buffered. */
	for (uint32_t i = 0; i < VSOCK_BUF_ALLOC / VSOCK_MAX_PKT; i++)
		send_pkt(f, h, data, VSOCK_MAX_PKT, false);
	pthread_mutex_lock(&f->lock);
	long buffered = virtio_vsock_conn_buffered(f->v, 1234, 40000);
	pthread_mutex_unlock(&f->lock);
	assert_true(buffered >= 0 && buffered <= (long)VSOCK_BUF_ALLOC);
	assert_int_equal(f->broken, 0);
	/* One byte beyond the credit (no CREDIT_UPDATE reached the guest):
	 * RST, host fd closed. */
	send_pkt(f, h, data, 1, false);
	post_rx(f, 2);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	expect_none(f);
	assert_int_equal(nconns(f), 0);
	close(fd);

	/* With a reading host the credit comes back: a guest that respects
	 * it (sends only what buf_alloc - (sent - fwd_cnt) allows) gets
	 * CREDIT_UPDATEs and never stalls for good. */
	while (recv_pkt(f, p))
		;
	fd = guest_connect(f, lfd, 40001, 1234);
	h = ghdr(VSOCK_OP_RW, 40001, 1234);
	static uint8_t sink[4 * VSOCK_BUF_ALLOC];
	uint32_t sent = 0, fwd = 0, hostgot = 0, updates = 0;
	while (sent < 4 * VSOCK_BUF_ALLOC) {
		if (VSOCK_BUF_ALLOC - (sent - fwd) >= VSOCK_MAX_PKT) {
			send_pkt(f, h, data, VSOCK_MAX_PKT, false);
			sent += VSOCK_MAX_PKT;
			continue;
		}
		/* Blocked on credit: the host reads, the guest looks for news. */
		read_all(f, fd, sink + hostgot, sent - hostgot);
		hostgot = sent;
		pump(f);
		post_rx(f, 1);
		expect_pkt(f, p, VSOCK_OP_CREDIT_UPDATE, 1234, 40001);
		assert_int_equal(p->h.buf_alloc, VSOCK_BUF_ALLOC);
		assert_true(p->h.fwd_cnt - fwd <= sent - fwd);
		assert_true(p->h.fwd_cnt != fwd);
		fwd = p->h.fwd_cnt;
		updates++;
	}
	assert_true(updates >= 3);
	assert_int_equal(nconns(f), 1);
	assert_int_equal(f->broken, 0);
	close(fd);
	close(lfd);
	free(p);
}

static void test_malformed(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	post_rx(f, 32);
	uint8_t raw[VSOCK_HDR_SIZE + 128];
	memset(raw, 0, sizeof(raw));

	/* Shorter than a header, empty: dropped. */
	struct vsock_hdr h = ghdr(VSOCK_OP_REQUEST, 40000, 1234);
	vsock_hdr_encode(&h, raw);
	send_raw(f, raw, 20, false);
	send_raw(f, raw, 0, false);
	expect_none(f);
	assert_int_equal(nconns(f), 0);

	/* Wrong CIDs: dropped. */
	h.src_cid = 4;
	send_pkt(f, h, NULL, 0, false);
	h.src_cid = GUEST_CID | (1ULL << 32);
	send_pkt(f, h, NULL, 0, false);
	h.src_cid = GUEST_CID;
	h.dst_cid = 5;
	send_pkt(f, h, NULL, 0, false);
	h.dst_cid = VSOCK_HOST_CID | (1ULL << 40);
	send_pkt(f, h, NULL, 0, false);
	expect_none(f);
	assert_int_equal(nconns(f), 0);

	/* Unknown type, unknown op, op 0, len beyond the buffer or the
	 * limit: RST replies. */
	h = ghdr(VSOCK_OP_REQUEST, 40000, 1234);
	h.type = 2;
	send_pkt(f, h, NULL, 0, false);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	h = ghdr(99, 40000, 1234);
	send_pkt(f, h, NULL, 0, false);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	h = ghdr(VSOCK_OP_INVALID, 40000, 1234);
	send_pkt(f, h, NULL, 0, false);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	h = ghdr(VSOCK_OP_REQUEST, 40000, 1234);
	h.len = 100;
	send_pkt(f, h, "0123456789", 10, true);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	h = ghdr(VSOCK_OP_RW, 40000, 1234);
	static uint8_t big[VSOCK_MAX_PKT + 1];
	send_pkt(f, h, big, VSOCK_MAX_PKT + 1, false);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	h.len = UINT32_MAX;
	send_pkt(f, h, NULL, 0, true);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	assert_int_equal(nconns(f), 0);

	/* Packets for no stream: RST reply, except to an RST. */
	send_pkt(f, ghdr(VSOCK_OP_RW, 41000, 9999), "x", 1, false);
	expect_pkt(f, p, VSOCK_OP_RST, 9999, 41000);
	send_op(f, VSOCK_OP_SHUTDOWN, 41000, 9999, 3);
	expect_pkt(f, p, VSOCK_OP_RST, 9999, 41000);
	send_op(f, VSOCK_OP_CREDIT_UPDATE, 41000, 9999, 0);
	expect_pkt(f, p, VSOCK_OP_RST, 9999, 41000);
	send_op(f, VSOCK_OP_RESPONSE, 41000, 9999, 0);
	expect_pkt(f, p, VSOCK_OP_RST, 9999, 41000);
	send_op(f, VSOCK_OP_RST, 41000, 9999, 0);
	expect_none(f);

	/* On an open stream, a bad packet resets it. */
	int fd = guest_connect(f, lfd, 40000, 1234);
	send_op(f, 42, 40000, 1234, 0);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40000);
	expect_eof(fd);
	close(fd);
	fd = guest_connect(f, lfd, 40001, 1234);
	send_op(f, VSOCK_OP_REQUEST, 40001, 1234, 0); /* again on an open stream */
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40001);
	expect_eof(fd);
	close(fd);
	fd = guest_connect(f, lfd, 40002, 1234);
	h = ghdr(VSOCK_OP_RW, 40002, 1234);
	h.type = 7;
	send_pkt(f, h, "abc", 3, false);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40002);
	expect_eof(fd);
	close(fd);
	fd = guest_connect(f, lfd, 40003, 1234);
	send_op(f, VSOCK_OP_SHUTDOWN, 40003, 1234, VSOCK_SHUTDOWN_SEND);
	send_pkt(f, ghdr(VSOCK_OP_RW, 40003, 1234), "abc", 3, false); /* after SEND */
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 40003);
	close(fd);
	assert_int_equal(nconns(f), 0);
	assert_int_equal(f->broken, 0);

	/* The RST reply FIFO is bounded: a flood without rx buffers. */
	while (recv_pkt(f, p))
		;
	uint32_t spare = (uint16_t)(f->rx.aidx - used_idx(f, &f->rx));
	for (uint32_t i = 0; i < VSOCK_RST_QUEUE * 2 + spare; i++)
		send_op(f, VSOCK_OP_RW, 50000 + i, 1, 0);
	uint32_t n = 0;
	while (recv_pkt(f, p))
		n++;
	assert_int_equal(n, spare);
	n = 0;
	for (int i = 0; i < 5; i++) {
		uint32_t out = (uint16_t)(f->rx.aidx - used_idx(f, &f->rx));
		post_rx(f, NSLOT - 1 - out);
		while (recv_pkt(f, p))
			n++;
	}
	/* What came later while the FIFO was full was dropped. */
	assert_int_equal(n, VSOCK_RST_QUEUE);
	close(lfd);
	free(p);
}

static void test_bad_rings(void **state)
{
	struct fx *f = *state;
	/* rx buffer too small for a header */
	struct seg s = { slot_addr(&f->rx, 0), 20, true };
	post(f, &f->rx, &s, 1);
	send_op(f, VSOCK_OP_RW, 1, 2, 0);
	assert_int_equal(f->broken, 1);
	/* Broken: nothing is processed until the device is reset. */
	notify(f, VSOCK_RXQ);
	notify(f, VSOCK_TXQ);
	assert_int_equal(f->broken, 1);

	/* rx buffer device-readable */
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	pthread_mutex_unlock(&f->lock);
	ring_init(f, &f->rx, 0x10000, f->rx.bufs);
	ring_init(f, &f->tx, 0x20000, f->tx.bufs);
	start(f);
	s.len = 100;
	s.write = false;
	post(f, &f->rx, &s, 1);
	send_op(f, VSOCK_OP_RW, 1, 2, 0);
	assert_int_equal(f->broken, 2);

	/* malformed tx ring: head outside the table */
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	pthread_mutex_unlock(&f->lock);
	ring_init(f, &f->rx, 0x10000, f->rx.bufs);
	ring_init(f, &f->tx, 0x20000, f->tx.bufs);
	start(f);
	put16(f, f->tx.q.avail_gpa + 4, QSIZE + 5);
	put16(f, f->tx.q.avail_gpa + 2, 1);
	notify(f, VSOCK_TXQ);
	assert_int_equal(f->broken, 3);

	/* event buffer too small */
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	pthread_mutex_unlock(&f->lock);
	ring_init(f, &f->tx, 0x20000, f->tx.bufs);
	start(f);
	struct seg e = { slot_addr(&f->ev, 0), 2, true };
	post(f, &f->ev, &e, 1);
	virtio_vsock_transport_reset(f->v);
	assert_int_equal(f->broken, 4);
}

static void test_transport_reset(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int fd = guest_connect(f, lfd, 40000, 1234);
	int c = uds_client(f);
	assert_int_equal(write(c, "CONN", 4), 4);
	pump(f);
	assert_int_equal(nconns(f), 2);

	virtio_vsock_transport_reset(f->v);
	assert_int_equal(nconns(f), 0);
	expect_eof(fd);
	expect_eof(c);
	assert_int_equal(used_idx(f, &f->ev), 0); /* no event buffer yet */
	struct seg e = { slot_addr(&f->ev, 0), 8, true };
	memset(gpa(f, e.gpa, 8), 0xff, 8);
	post(f, &f->ev, &e, 1);
	notify(f, VSOCK_EVQ);
	assert_int_equal(used_idx(f, &f->ev), 1);
	assert_int_equal(get32(f, f->ev.q.used_gpa + 8), 4);
	assert_int_equal(get32(f, e.gpa), VSOCK_EVENT_TRANSPORT_RESET);
	assert_int_equal(f->used_calls[VSOCK_EVQ], 1);

	/* With a buffer waiting it is delivered at once, once. */
	e.gpa = slot_addr(&f->ev, 1);
	post(f, &f->ev, &e, 1);
	notify(f, VSOCK_EVQ);
	assert_int_equal(used_idx(f, &f->ev), 1);
	virtio_vsock_transport_reset(f->v);
	assert_int_equal(used_idx(f, &f->ev), 2);
	expect_none(f); /* no RST for the closed streams */

	/* Streams work again afterwards. */
	close(fd);
	fd = guest_connect(f, lfd, 40000, 1234);
	assert_int_equal(nconns(f), 1);
	close(fd);
	close(c);
	close(lfd);
	assert_int_equal(f->broken, 0);
	free(p);
}

#define MANY 100

static void test_many_connections(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int fds[MANY];
	post_rx(f, MANY);
	for (int i = 0; i < MANY; i++)
		send_op(f, VSOCK_OP_REQUEST, 50000 + (uint32_t)i, 1234, 0);
	for (int i = 0; i < MANY; i++) {
		expect_pkt(f, p, VSOCK_OP_RESPONSE, 1234, 50000 + (uint32_t)i);
		fds[i] = accept_nb(lfd);
		assert_true(fds[i] >= 0);
	}
	assert_int_equal(nconns(f), MANY);
	/* Data on each, both ways (accept order = request order). */
	for (int i = 0; i < MANY; i++) {
		char msg[16];
		int n = snprintf(msg, sizeof(msg), "to %d", i);
		send_pkt(f, ghdr(VSOCK_OP_RW, 50000 + (uint32_t)i, 1234), msg, (uint32_t)n, false);
		char got[16];
		read_all(f, fds[i], got, (size_t)n);
		assert_memory_equal(got, msg, (size_t)n);
		n = snprintf(msg, sizeof(msg), "from %d", i);
		assert_int_equal(write(fds[i], msg, (size_t)n), n);
	}
	int seen[MANY] = { 0 };
	for (int round = 0; round < 4; round++) {
		post_rx(f, MANY / 4);
		pump(f);
		while (recv_pkt(f, p)) {
			assert_int_equal(p->h.op, VSOCK_OP_RW);
			int i = (int)p->h.dst_port - 50000;
			assert_true(i >= 0 && i < MANY);
			char msg[16];
			int n = snprintf(msg, sizeof(msg), "from %d", i);
			assert_int_equal(p->n, (uint32_t)n);
			assert_memory_equal(p->data, msg, (size_t)n);
			seen[i]++;
		}
	}
	for (int i = 0; i < MANY; i++)
		assert_int_equal(seen[i], 1);
	for (int i = 0; i < MANY; i++) {
		send_op(f, VSOCK_OP_RST, 50000 + (uint32_t)i, 1234, 0);
		expect_eof(fds[i]);
		close(fds[i]);
	}
	assert_int_equal(nconns(f), 0);
	expect_none(f);
	close(lfd);
	free(p);
}

/* The table holds VSOCK_MAX_CONNS streams; one more is refused. */
static void test_conn_limit(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	int *fds = calloc(VSOCK_MAX_CONNS, sizeof(int));
	assert_non_null(fds);
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++) {
		if (i % 64 == 0)
			post_rx(f, 64);
		send_op(f, VSOCK_OP_REQUEST, 10000 + i, 1234, 0);
		expect_pkt(f, p, VSOCK_OP_RESPONSE, 1234, 10000 + i);
		fds[i] = accept_nb(lfd);
		assert_true(fds[i] >= 0);
	}
	assert_int_equal(nconns(f), VSOCK_MAX_CONNS);
	post_rx(f, 4);
	send_op(f, VSOCK_OP_REQUEST, 9999, 1234, 0);
	expect_pkt(f, p, VSOCK_OP_RST, 1234, 9999);
	/* In-process connects and Unix clients are refused too. */
	assert_int_equal(virtio_vsock_connect(f->v, 1, 1000, NULL), -EAGAIN);
	int c = uds_client(f);
	pump(f);
	expect_eof(c);
	close(c);
	/* Ephemeral ports skip ports in use: free one slot, connect. */
	send_op(f, VSOCK_OP_RST, 10000, 1234, 0);
	close(fds[0]);
	struct connect_call cc;
	connect_start(&cc, f, 1, 200);
	wait_request(f, p, 1);
	assert_true(p->h.src_port >= VSOCK_PORT_FIRST && p->h.src_port != 1234);
	pthread_join(cc.t, NULL);
	assert_int_equal(cc.result, -ETIMEDOUT);
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(nconns(f), 0);
	for (uint32_t i = 1; i < VSOCK_MAX_CONNS; i++) {
		expect_eof(fds[i]);
		close(fds[i]);
	}
	free(fds);
	close(lfd);
	free(p);
}

/* Random headers, random sizes: nothing breaks, everything stays bounded. */
static void test_random_packets(void **state)
{
	struct fx *f = *state;
	struct pkt *p = malloc(sizeof(*p));
	int lfd = service(f, 1234);
	set_nonblock(lfd);
	int host[256];
	int nhost = 0;
	srand(12345);
	static uint8_t payload[VSOCK_MAX_PKT + 64];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)rand();
	static const uint16_t ops[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xffff };
	for (int it = 0; it < 6000; it++) {
		struct vsock_hdr h = ghdr(ops[rand() % 10], 40000 + (uint32_t)(rand() % 8),
					  rand() % 4 ? 1234 : (uint32_t)rand());
		if (rand() % 16 == 0)
			h.type = (uint16_t)rand();
		if (rand() % 32 == 0)
			h.src_cid = (uint64_t)rand();
		if (rand() % 32 == 0)
			h.dst_cid = (uint64_t)rand();
		h.flags = (uint32_t)rand();
		h.buf_alloc = rand() % 4 ? 65536 : (uint32_t)rand();
		h.fwd_cnt = (uint32_t)rand();
		uint32_t n = rand() % 8 ? (uint32_t)(rand() % 300) : (uint32_t)(rand() % (VSOCK_MAX_PKT + 64));
		bool keep = rand() % 8 == 0;
		if (keep)
			h.len = rand() % 2 ? (uint32_t)rand() : n + 1;
		if (rand() % 64 == 0) {
			send_raw(f, payload, (uint32_t)(rand() % VSOCK_HDR_SIZE), false);
		} else {
			send_pkt(f, h, payload, n, keep);
		}
		if (it % 8 == 0) {
			uint32_t out = (uint16_t)(f->rx.aidx - used_idx(f, &f->rx));
			if (out < 32)
				post_rx(f, 32 - out);
		}
		int fd = accept_nb(lfd);
		if (fd >= 0 && nhost < 256)
			host[nhost++] = fd;
		else if (fd >= 0)
			close(fd);
		if (nhost && rand() % 4 == 0) {
			int k = rand() % nhost;
			ssize_t w = write(host[k], payload, (size_t)(rand() % 5000));
			(void)w;
			uint8_t sink[8192];
			ssize_t r = read(host[k], sink, sizeof(sink));
			(void)r;
			if (rand() % 16 == 0) {
				close(host[k]);
				host[k] = host[--nhost];
			}
		}
		pump(f);
		while (recv_pkt(f, p))
			;
		assert_true(nconns(f) <= 8 * 2);
	}
	assert_int_equal(f->broken, 0);
	pthread_mutex_lock(&f->lock);
	virtio_vsock_stop(f->v);
	assert_int_equal(virtio_vsock_nr_conns(f->v), 0);
	pthread_mutex_unlock(&f->lock);
	for (int i = 0; i < nhost; i++)
		close(host[i]);
	close(lfd);
	free(p);
}

/* ------------------------------------------------------ API + registration */

static uint32_t mmio_read32(struct microvm *vm, uint64_t addr)
{
	uint32_t v = 0;
	assert_true(bus_access(&vm->kvm.mmio, addr, &v, 4, false));
	return v;
}

static void set_state(struct microvm *vm, int s)
{
	pthread_mutex_lock(&vm->run.lock);
	vm->run.state = s;
	pthread_mutex_unlock(&vm->run.lock);
}

static void test_api(void **state)
{
	struct fx *f = *state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	microvm_vsock_config cfg = MICROVM_VSOCK_CONFIG_INIT;
	cfg.guest_cid = 3;
	assert_int_equal(microvm_set_vsock(NULL, &cfg), -EINVAL);
	assert_int_equal(microvm_set_vsock(vm, NULL), -EINVAL);
	cfg.size = 8;
	assert_int_equal(microvm_set_vsock(vm, &cfg), -EINVAL);
	cfg.size = sizeof(cfg);
	cfg.flags = 1;
	assert_int_equal(microvm_set_vsock(vm, &cfg), -EINVAL);
	cfg.flags = 0;
	static const uint64_t bad_cids[] = { 0, 1, 2, 0xffffffffULL, 1ULL << 32, UINT64_MAX };
	for (unsigned i = 0; i < 6; i++) {
		cfg.guest_cid = bad_cids[i];
		assert_int_equal(microvm_set_vsock(vm, &cfg), -EINVAL);
	}
	assert_non_null(strstr(microvm_last_error(vm), "CID"));
	cfg.guest_cid = 0xfffffffeULL;
	cfg.uds_path = "";
	assert_int_equal(microvm_set_vsock(vm, &cfg), -EINVAL);
	char longp[VSOCK_UDS_PATH_MAX + 2];
	memset(longp, 'a', sizeof(longp));
	longp[VSOCK_UDS_PATH_MAX + 1] = 0;
	cfg.uds_path = longp;
	assert_int_equal(microvm_set_vsock(vm, &cfg), -EINVAL);
	assert_false(vm->cfg.vsock_enabled);
	longp[VSOCK_UDS_PATH_MAX] = 0;
	assert_int_equal(microvm_set_vsock(vm, &cfg), 0); /* longest allowed */
	assert_true(vm->cfg.vsock_enabled);
	assert_int_equal(vm->cfg.vsock_cid, 0xfffffffeULL);
	cfg.uds_path = NULL;
	cfg.guest_cid = 3;
	assert_int_equal(microvm_set_vsock(vm, &cfg), 0);
	assert_null(vm->cfg.vsock_uds_path);

	assert_int_equal(microvm_vsock_connect(NULL, 1, 0), -EINVAL);
	assert_int_equal(microvm_vsock_connect(vm, 1, 0), -EINVAL); /* not running */

	set_state(vm, MICROVM_STATE_RUNNING);
	assert_int_equal(microvm_set_vsock(vm, &cfg), -EBUSY);
	assert_int_equal(microvm_vsock_connect(vm, 1, 0), -ENODEV); /* not added yet */
	set_state(vm, MICROVM_STATE_CONFIGURED);

	/* Registration, with a stale socket file at uds_path replaced. */
	char path[80];
	snprintf(path, sizeof(path), "%s/api.sock", f->dir);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	cfg.uds_path = path;
	cfg.guest_cid = 0x123456789ULL & 0xffffffffULL;
	assert_int_equal(microvm_set_vsock(vm, &cfg), 0);
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 1);
	assert_non_null(vm->dev.vsock);
	assert_int_equal(virtio_devices_add(vm), 0); /* a retried start */
	assert_int_equal(vm->dev.nr_virtio, 1);
	uint64_t base = vm->dev.virtio[0]->base;
	assert_int_equal(mmio_read32(vm, base + 0x008), VIRTIO_ID_VSOCK);
	assert_int_equal(mmio_read32(vm, base + 0x010) & 0xffffffu, 0); /* no device features */
	assert_int_equal(mmio_read32(vm, base + 0x100), 0x23456789u);
	assert_int_equal(mmio_read32(vm, base + 0x104), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	/* Something can connect to it (the backlog holds it). */
	int cl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(cl, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(cl);

	/* In process, running: the request waits for the guest. */
	set_state(vm, MICROVM_STATE_RUNNING);
	assert_int_equal(microvm_vsock_connect(vm, UINT32_MAX, 0), -EINVAL);
	assert_int_equal(microvm_vsock_connect(vm, 1, -2), -EINVAL);
	assert_int_equal(microvm_vsock_connect(vm, 1, 0), -ETIMEDOUT);
	assert_int_equal(microvm_vsock_connect(vm, 1, 20), -ETIMEDOUT);
	set_state(vm, MICROVM_STATE_STOPPED);
	assert_int_equal(microvm_vsock_connect(vm, 1, 0), -EINVAL);
	set_state(vm, MICROVM_STATE_CONFIGURED);

	microvm_destroy(vm);
	assert_int_equal(stat(path, &st), -1); /* removed at destroy */

	/* A non-socket at uds_path is not replaced: the start fails. */
	assert_int_equal(microvm_create(&vm), 0);
	int rf = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(rf >= 0);
	close(rf);
	assert_int_equal(microvm_set_vsock(vm, &cfg), 0);
	assert_int_equal(virtio_devices_add(vm), -EEXIST);
	assert_null(vm->dev.vsock);
	assert_int_equal(vm->dev.nr_virtio, 0);
	microvm_destroy(vm);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_codec),
		cmocka_unit_test_setup_teardown(test_guest_connect_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_to_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_connect_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_connect_inproc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_host_to_guest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_guest_to_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_rings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transport_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conn_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_packets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_api, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
