/*
 * Unit tests for virtio-net (lib/virtio/net.c) and its backends
 * (lib/backend/net_*.c), no /dev/kvm.
 *
 * A fake driver keeps the receive and transmit rings in a 32 MiB guest RAM;
 * the engine runs over a stream backend on one end of a socketpair (the
 * test is the peer on the other end) and watches its fd in a manual event
 * loop (no thread): pump() runs its handlers with evloop_poll(), so every
 * step is deterministic. Then the public API's
 * argument checks, and user-mode networking with the real passt when it is
 * installed. alarm() guards against anything blocking.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/arch.h"
#include "backend/net.h"
#include "evloop.h"
#include "memory.h"
#include "snapshot/state.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "virtio/queue.h"
#include "vm.h"

#define RAM (32 * MIB)
#define QSIZE 256
#define NSLOT 64 /* chains outstanding per ring; up to 4 descriptors each */
#define SLOT_SIZE (70u * 1024u)
#define F_NEXT 1
#define F_WRITE 2
#define HDR NET_VNET_HDR_LEN

struct ring {
	struct virtq q;
	uint16_t aidx;
	uint16_t useen;
	uint64_t bufs;
};

struct fx {
	struct guest_mem mem;
	struct ring rx, tx;
	struct evloop loop;
	pthread_mutex_t lock;
	struct virtio_net *n;
	int peer; /* the other end of the stream backend */
	uint32_t used_calls[2];
	int broken, cfg_changed;
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

/* Make a chain of 1..4 segments available; returns its slot. */
static uint32_t post(struct fx *f, struct ring *r, const struct seg *s, unsigned n)
{
	assert_true(n >= 1 && n <= 4);
	assert_true((uint16_t)(r->aidx - used_idx(f, r)) < NSLOT);
	uint32_t slot = r->aidx % NSLOT;
	uint16_t head = (uint16_t)(4 * slot);
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
	virtio_net_notify(f->n, q);
	pthread_mutex_unlock(&f->lock);
}

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

static struct net_counters counters(struct fx *f)
{
	struct net_counters c;
	pthread_mutex_lock(&f->lock);
	virtio_net_counters(f->n, &c);
	pthread_mutex_unlock(&f->lock);
	return c;
}

/* ------------------------------------------------------------- fixture */

static void env_used(void *opaque, uint16_t q)
{
	struct fx *f = opaque;
	assert_true(q < 2);
	f->used_calls[q]++;
}

static void env_broken(void *opaque, const char *why)
{
	(void)why;
	((struct fx *)opaque)->broken++;
}

static void env_cfg(void *opaque)
{
	((struct fx *)opaque)->cfg_changed++;
}

static void start(struct fx *f, uint64_t features)
{
	pthread_mutex_lock(&f->lock);
	virtio_net_start(f->n, &f->rx.q, &f->tx.q, features);
	pthread_mutex_unlock(&f->lock);
}

#define FEAT(b) (1ULL << (b))
#define STD_FEATURES (FEAT(VIRTIO_NET_F_MRG_RXBUF) | FEAT(VIRTIO_NET_F_STATUS) | \
		      FEAT(VIRTIO_NET_F_MAC) | FEAT(VIRTIO_F_VERSION_1))

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(arch_ram_init(&f->mem, RAM), 0);
	ring_init(f, &f->rx, 0x10000, 0x100000);
	ring_init(f, &f->tx, 0x20000, 0x100000 + NSLOT * SLOT_SIZE);
	assert_int_equal(evloop_init_manual(&f->loop), 0);
	pthread_mutex_init(&f->lock, NULL);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->peer = sv[1];
	struct net_backend *be;
	char err[256];
	assert_int_equal(net_stream_open(sv[0], &be, err, sizeof(err)), 0);
	assert_false(be->vnet_hdr);
	struct net_env env = { .loop = &f->loop, .lock = &f->lock, .used = env_used,
			       .broken = env_broken, .config_changed = env_cfg, .opaque = f };
	struct net_dev_config cfg = { .backend = NET_BE_STREAM_FD,
				      .mac = { 0x02, 1, 2, 3, 4, 5 }, .link_up = true };
	f->n = virtio_net_new(&env, be, &cfg);
	assert_non_null(f->n);
	assert_int_equal(virtio_net_features(f->n) & FEAT(VIRTIO_NET_F_CSUM), 0);
	signal(SIGPIPE, SIG_IGN);
	alarm(60);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	alarm(0);
	virtio_net_free(f->n);
	close(f->peer);
	evloop_release(&f->loop);
	pthread_mutex_destroy(&f->lock);
	gm_release(&f->mem);
	free(f);
	return 0;
}

/* --------------------------------------------------------------- helpers */

static void fill_frame(uint8_t *p, uint32_t len, uint8_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* The guest sends header + frame of @len bytes (header in its own
 * descriptor), then notifies. */
static void guest_send(struct fx *f, uint32_t len, uint8_t seed, uint8_t hdr_flags)
{
	uint32_t slot = f->tx.aidx % NSLOT;
	uint64_t a = slot_addr(&f->tx, slot);
	uint8_t *h = gpa(f, a, HDR);
	memset(h, 0, HDR);
	h[0] = hdr_flags;
	fill_frame(gpa(f, a + 64, len), len, seed);
	struct seg s[2] = { { a, HDR, false }, { a + 64, len, false } };
	post(f, &f->tx, s, 2);
	notify(f, NET_TXQ);
}

static bool read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 2000) <= 0)
			return false;
		ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/* The peer writes one frame of @len bytes with its length prefix. */
static void peer_send(struct fx *f, uint32_t len, uint8_t seed)
{
	static uint8_t buf[4 + NET_MAX_FRAME];
	uint32_t be = htobe32(len);
	memcpy(buf, &be, 4);
	fill_frame(buf + 4, len, seed);
	assert_int_equal(write(f->peer, buf, 4 + len), (ssize_t)(4 + len));
}

/* Post @n receive buffers of @size bytes, one descriptor each. */
static void post_rx(struct fx *f, unsigned n, uint32_t size, bool kick)
{
	for (unsigned i = 0; i < n; i++) {
		uint32_t slot = f->rx.aidx % NSLOT;
		struct seg s = { slot_addr(&f->rx, slot), size, true };
		post(f, &f->rx, &s, 1);
	}
	if (kick)
		notify(f, NET_RXQ);
}

/* Used entry @i of the receive ring: its slot and length. */
static void rx_used(struct fx *f, uint16_t i, uint32_t *slot, uint32_t *len)
{
	uint64_t e = f->rx.q.used_gpa + 4 + 8ULL * (i % QSIZE);
	uint32_t id = get32(f, e);
	assert_int_equal(id % 4, 0);
	*slot = id / 4;
	*len = get32(f, e + 4);
}

/* ----------------------------------------------------------------- tests */

static void test_tx_framing(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	guest_send(f, 60, 1, 0);
	guest_send(f, 1514, 2, 0);
	assert_int_equal(used_idx(f, &f->tx), 2);
	assert_true(f->used_calls[NET_TXQ] >= 1);
	uint8_t buf[1600], want[1600];
	uint32_t lens[2] = { 60, 1514 };
	for (int i = 0; i < 2; i++) {
		uint32_t be;
		assert_true(read_full(f->peer, &be, 4));
		assert_int_equal(be32toh(be), lens[i]);
		assert_true(read_full(f->peer, buf, lens[i]));
		fill_frame(want, lens[i], (uint8_t)(i + 1));
		assert_memory_equal(buf, want, lens[i]);
	}
	struct net_counters c = counters(f);
	assert_int_equal(c.tx_packets, 2);
	assert_int_equal(c.tx_bytes, 60 + 1514);
	assert_int_equal(c.tx_malformed + c.tx_dropped, 0);
}

/* A peer that does not read: frames stay in the ring (bounded buffer),
 * the fd is watched for writing, and everything goes out once it reads. */
static void test_tx_backpressure(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	int sz = 4096;
	setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	for (int i = 0; i < 40; i++)
		guest_send(f, 60000, (uint8_t)i, 0);
	assert_true(used_idx(f, &f->tx) < 40);
	assert_true(virtio_net_watched(f->n) & EPOLLOUT);
	uint8_t *buf = malloc(4 + 60000);
	for (int i = 0; i < 40; i++) {
		pump(f);
		assert_true(read_full(f->peer, buf, 4 + 60000));
		assert_int_equal(buf[4], (uint8_t)i); /* in order, none lost */
	}
	free(buf);
	pump(f);
	assert_int_equal(used_idx(f, &f->tx), 40);
	assert_int_equal(counters(f).tx_packets, 40);
	assert_false(virtio_net_watched(f->n) & EPOLLOUT);
}

static void test_rx_mergeable(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	post_rx(f, 4, 1500, true);
	peer_send(f, 3000, 9);
	pump(f);
	assert_int_equal(used_idx(f, &f->rx), 3); /* 12 + 3000 = 1500 + 1500 + 12 */
	uint8_t got[3100], want[3000];
	uint32_t off = 0, slot, len, first = 0;
	for (uint16_t i = 0; i < 3; i++) {
		rx_used(f, i, &slot, &len);
		if (i == 0)
			first = slot;
		memcpy(got + off, gpa(f, slot_addr(&f->rx, slot), len), len);
		off += len;
	}
	assert_int_equal(off, HDR + 3000);
	uint8_t *h = gpa(f, slot_addr(&f->rx, first), HDR);
	assert_int_equal(h[0], 0);
	assert_int_equal(h[1], VIRTIO_NET_HDR_GSO_NONE);
	assert_int_equal(get16(f, slot_addr(&f->rx, first) + NET_HDR_NUM_BUFFERS), 3);
	fill_frame(want, 3000, 9);
	assert_memory_equal(got + HDR, want, 3000);
	struct net_counters c = counters(f);
	assert_int_equal(c.rx_packets, 1);
	assert_int_equal(c.rx_bytes, 3000);
	assert_int_equal(f->broken, 0);
}

/* Without MRG_RXBUF a frame must fit one chain: too big is dropped, the
 * chain stays for the next frame, num_buffers is 1. */
static void test_rx_no_mergeable(void **state)
{
	struct fx *f = *state;
	start(f, FEAT(VIRTIO_NET_F_STATUS) | FEAT(VIRTIO_F_VERSION_1));
	post_rx(f, 1, 1526, true);
	peer_send(f, 3000, 1); /* does not fit */
	peer_send(f, 1514, 2);
	pump(f);
	assert_int_equal(used_idx(f, &f->rx), 1);
	uint32_t slot, len;
	rx_used(f, 0, &slot, &len);
	assert_int_equal(len, HDR + 1514);
	assert_int_equal(get16(f, slot_addr(&f->rx, slot) + NET_HDR_NUM_BUFFERS), 1);
	assert_int_equal(gpa(f, slot_addr(&f->rx, slot), HDR + 1)[HDR], 2);
	struct net_counters c = counters(f);
	assert_int_equal(c.rx_packets, 1);
	assert_int_equal(c.rx_dropped, 1);
}

/* No receive buffers: the device stops reading (its buffer is bounded, the
 * rest stays in the socket), drops nothing, and delivers everything once
 * buffers come. */
static void test_rx_no_buffers(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	enum { N = 40, LEN = 1400 };
	for (int i = 0; i < N; i++) {
		peer_send(f, LEN, (uint8_t)i);
		pump(f);
	}
	assert_int_equal(used_idx(f, &f->rx), 0);
	assert_false(virtio_net_watched(f->n) & EPOLLIN); /* not reading any more */
	int left = 0;
	assert_int_equal(ioctl(virtio_net_backend(f->n)->fd, FIONREAD, &left), 0);
	assert_int_equal(left, (N - 1) * (4 + LEN)); /* only the first frame was read */
	struct net_counters c = counters(f);
	assert_int_equal(c.rx_packets + c.rx_dropped, 0);
	for (int done = 0; done < N;) {
		int k = N - done < 25 ? N - done : 25;
		post_rx(f, (unsigned)k, 2048, true);
		pump(f);
		for (int i = done; i < done + k; i++) {
			uint32_t slot, len;
			rx_used(f, (uint16_t)i, &slot, &len);
			assert_int_equal(len, HDR + LEN);
			assert_int_equal(gpa(f, slot_addr(&f->rx, slot), HDR + 1)[HDR], (uint8_t)i);
		}
		done += k;
		assert_int_equal(used_idx(f, &f->rx), done);
	}
	c = counters(f);
	assert_int_equal(c.rx_packets, N);
	assert_int_equal(c.rx_dropped, 0);
}

static void test_link(void **state)
{
	struct fx *f = *state;
	uint8_t cfg[NET_CFG_SIZE];
	virtio_net_config_read(f->n, 0, cfg, sizeof(cfg));
	assert_memory_equal(cfg, ((uint8_t[]){ 0x02, 1, 2, 3, 4, 5 }), 6);
	assert_int_equal(cfg[NET_CFG_STATUS], VIRTIO_NET_S_LINK_UP);
	start(f, STD_FEATURES);
	pthread_mutex_lock(&f->lock);
	virtio_net_set_link(f->n, false);
	virtio_net_set_link(f->n, false); /* no change, no interrupt */
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(f->cfg_changed, 1);
	virtio_net_config_read(f->n, NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], 0);
	/* link down: frames both ways are dropped and counted */
	post_rx(f, 2, 2048, true);
	peer_send(f, 100, 1);
	pump(f);
	guest_send(f, 100, 1, 0);
	struct net_counters c = counters(f);
	assert_int_equal(c.rx_dropped, 1);
	assert_int_equal(c.tx_dropped, 1);
	assert_int_equal(used_idx(f, &f->rx), 0);
	pthread_mutex_lock(&f->lock);
	virtio_net_set_link(f->n, true);
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(f->cfg_changed, 2);
	virtio_net_config_read(f->n, NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], VIRTIO_NET_S_LINK_UP);
	/* a flap (restore): the next status read says down, then up again
	 * with a new config change; other fields do not end it */
	pthread_mutex_lock(&f->lock);
	virtio_net_begin_flap(f->n);
	virtio_net_config_read(f->n, 0, cfg, 6); /* the MAC */
	assert_int_equal(f->cfg_changed, 2);
	virtio_net_config_read(f->n, NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], 0);
	assert_int_equal(f->cfg_changed, 3);
	virtio_net_config_read(f->n, NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], VIRTIO_NET_S_LINK_UP);
	assert_int_equal(f->cfg_changed, 3);
	pthread_mutex_unlock(&f->lock);
	assert_true(virtio_net_link(f->n));
	/* a driver without VIRTIO_NET_F_STATUS gets no config interrupt */
	pthread_mutex_lock(&f->lock);
	virtio_net_stop(f->n);
	virtio_net_start(f->n, &f->rx.q, &f->tx.q, FEAT(VIRTIO_F_VERSION_1));
	virtio_net_set_link(f->n, false);
	pthread_mutex_unlock(&f->lock);
	assert_int_equal(f->cfg_changed, 3);
}

/* Malformed transmit chains are dropped and counted; the ring keeps
 * working. */
static void test_tx_malformed(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	uint64_t a = slot_addr(&f->tx, 0);
	struct seg hdr_only = { a, HDR, false };
	post(f, &f->tx, &hdr_only, 1);
	struct seg big[2] = { { a, HDR, false }, { a + 64, NET_MAX_FRAME + 1, false } };
	post(f, &f->tx, big, 2);
	struct seg writable[2] = { { a, HDR, false }, { a + 64, 100, true } };
	post(f, &f->tx, writable, 2);
	struct seg outside[2] = { { a, HDR, false }, { RAM + 0x100000ULL, 100, false } };
	post(f, &f->tx, outside, 2);
	notify(f, NET_TXQ);
	guest_send(f, 100, 3, VIRTIO_NET_HDR_F_NEEDS_CSUM); /* CSUM was not offered */
	assert_int_equal(used_idx(f, &f->tx), 5);
	guest_send(f, 100, 4, 0);
	assert_int_equal(used_idx(f, &f->tx), 6);
	struct net_counters c = counters(f);
	assert_int_equal(c.tx_malformed, 5);
	assert_int_equal(c.tx_packets, 1);
	assert_int_equal(f->broken, 0);
	uint8_t buf[104];
	assert_true(read_full(f->peer, buf, 104));
	assert_int_equal(be32toh(*(uint32_t *)buf), 100);
	assert_int_equal(buf[4], 4);
}

/* The peer closes: the backend is dead, the link goes down. */
static void test_peer_closed(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	close(f->peer);
	f->peer = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pump(f);
	assert_int_equal(f->cfg_changed, 1);
	assert_int_equal(virtio_net_watched(f->n), 0);
	guest_send(f, 100, 1, 0);
	assert_int_equal(counters(f).tx_dropped, 1);
}

/* A corrupt length prefix: the framing is lost, the backend dies. */
static void test_bad_length(void **state)
{
	struct fx *f = *state;
	start(f, STD_FEATURES);
	uint32_t be = htobe32(NET_MAX_FRAME + 1);
	assert_int_equal(write(f->peer, &be, 4), 4);
	pump(f);
	assert_int_equal(virtio_net_watched(f->n), 0);
	assert_false(virtio_net_link(f->n));
}

/* ------------------------------------------------------------- snapshot */

/* The device's node carries its whole configuration; loading checks every
 * value (a hostile state file gives an error, never a bad device). */
static void test_snapshot_node(void **state)
{
	struct fx *f = *state;
	struct net_port_fwd fw[2] = { { false, 8080, 80 }, { true, 5353, 53 } };
	struct net_dev_config in = { .backend = NET_BE_USER, .mac = { 2, 9, 8, 7, 6, 5 },
				     .passt_path = (char *)"/usr/bin/passt", .fwds = fw,
				     .n_fwds = 2 };
	struct net_dev_config *cfg = (struct net_dev_config *)virtio_net_config(f->n);
	struct net_dev_config saved = *cfg;
	*cfg = in; /* borrowed for the save only */
	pthread_mutex_lock(&f->lock);
	virtio_net_set_link(f->n, false);
	pthread_mutex_unlock(&f->lock);
	struct st_writer w;
	assert_int_equal(st_init(&w), 0);
	int node = st_node(&w, 0, "device");
	virtio_net_ops.save(f->n, &w, node);
	*cfg = saved;
	assert_true(st_finish(&w) > 0);
	char err[256];
	struct net_dev_config out;
	struct net_port_fwd fwds[NET_MAX_FWDS];
	node = st_sub(w.fdt, 0, "device", err, sizeof(err));
	assert_true(node >= 0);
	assert_int_equal(virtio_net_config_from_state(w.fdt, node, &out, fwds, err, sizeof(err)), 0);
	assert_int_equal(out.backend, NET_BE_USER);
	assert_memory_equal(out.mac, in.mac, 6);
	assert_false(out.link_up);
	assert_null(out.tap_name);
	assert_string_equal(out.passt_path, "/usr/bin/passt");
	assert_int_equal(out.n_fwds, 2);
	assert_int_equal(fwds[1].udp, 1);
	assert_int_equal(fwds[1].host_port, 5353);
	assert_int_equal(fwds[1].guest_port, 53);
	assert_int_equal(virtio_net_ops.load(f->n, NULL, w.fdt, node, err, sizeof(err)), 0);
	assert_false(virtio_net_link(f->n));
	st_free(&w);

	/* hostile values */
	static const struct { const char *name; uint32_t v; } bad[] = {
		{ "link-up", 2 }, { "backend", 0 }, { "backend", 9 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(st_init(&w), 0);
		node = st_node(&w, 0, "device");
		st_u32(&w, node, "backend", strcmp(bad[i].name, "backend") ? 1 : bad[i].v);
		st_blob(&w, node, "mac", in.mac, 6);
		st_u32(&w, node, "link-up", strcmp(bad[i].name, "link-up") ? 1 : bad[i].v);
		st_blob(&w, node, "port-forwards", "", 0);
		assert_true(st_finish(&w) > 0);
		node = st_sub(w.fdt, 0, "device", err, sizeof(err));
		assert_int_equal(virtio_net_config_from_state(w.fdt, node, &out, fwds, err,
							      sizeof(err)), -EINVAL);
		st_free(&w);
	}
	assert_int_equal(st_init(&w), 0); /* forwards not a multiple of 8, bad proto, short mac */
	node = st_node(&w, 0, "device");
	st_u32(&w, node, "backend", 4);
	st_blob(&w, node, "mac", in.mac, 5);
	st_u32(&w, node, "link-up", 1);
	st_blob(&w, node, "port-forwards", "1234567", 7);
	assert_true(st_finish(&w) > 0);
	node = st_sub(w.fdt, 0, "device", err, sizeof(err));
	assert_int_equal(virtio_net_config_from_state(w.fdt, node, &out, fwds, err, sizeof(err)),
			 -EINVAL);
	st_free(&w);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* ------------------------------------------------------------------- TAP */

/* A new TAP interface (IFF_VNET_HDR): its fd, and its name in @name; -1 if
 * this host does not allow it (not root, no /dev/net/tun). */
static int tap_create(char name[IFNAMSIZ], bool persist)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "mvmt%d");
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || (persist && ioctl(fd, TUNSETPERSIST, 1) < 0)) {
		close(fd);
		return -1;
	}
	memcpy(name, ifr.ifr_name, IFNAMSIZ);
	return fd;
}

static void tap_remove(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (fd >= 0 && ioctl(fd, TUNSETIFF, &ifr) == 0)
		ioctl(fd, TUNSETPERSIST, 0);
	if (fd >= 0)
		close(fd);
}

/* Interface @name up, without IPv6 chatter; an AF_PACKET socket on it. */
static int tap_up_and_sniff(const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	FILE *fp = fopen(path, "w");
	if (fp) {
		fputs("1", fp);
		fclose(fp);
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	assert_int_equal(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	assert_int_equal(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
	close(s);
	int p = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	assert_true(p >= 0);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = (int)if_nametoindex(name) };
	assert_int_equal(bind(p, (struct sockaddr *)&sll, sizeof(sll)), 0);
	return p;
}

#define TEST_ETHERTYPE 0x88b5 /* IEEE local experimental */

static void make_eth(uint8_t *p, uint32_t len, uint8_t seed)
{
	fill_frame(p, len, seed);
	memset(p, 0xff, 6);                            /* broadcast */
	memcpy(p + 6, ((uint8_t[]){ 2, 0, 0, 0, 0, 1 }), 6);
	p[12] = TEST_ETHERTYPE >> 8;
	p[13] = TEST_ETHERTYPE & 0xff;
}

/* Frames through a real TAP with virtio headers: offloads offered, the
 * header passes through, frames reach the interface and come back. */
static void test_tap(void **state)
{
	struct fx *f = *state;
	char name[IFNAMSIZ];
	int fd = tap_create(name, false);
	if (fd < 0) {
		if (getenv("CI"))
			fail_msg("cannot create a TAP interface here (root, /dev/net/tun), and CI is set: this test must run");
		print_message("SKIPPED: cannot create a TAP interface here (root, /dev/net/tun)\n");
		skip();
	}
	struct net_backend *be;
	char err[256];
	assert_int_equal(net_tap_open(NULL, fd, &be, err, sizeof(err)), 0); /* adopts fd */
	assert_true(be->vnet_hdr);
	virtio_net_free(f->n);
	struct net_env env = { .loop = &f->loop, .lock = &f->lock, .used = env_used,
			       .broken = env_broken, .config_changed = env_cfg, .opaque = f };
	struct net_dev_config cfg = { .backend = NET_BE_TAP_FD, .mac = { 2, 0, 0, 0, 0, 2 },
				      .link_up = true };
	f->n = virtio_net_new(&env, be, &cfg);
	assert_non_null(f->n);
	assert_true(virtio_net_features(f->n) & FEAT(VIRTIO_NET_F_HOST_TSO4));
	int snif = tap_up_and_sniff(name);
	start(f, STD_FEATURES | FEAT(VIRTIO_NET_F_CSUM) | FEAT(VIRTIO_NET_F_GUEST_CSUM));

	/* guest -> interface */
	uint32_t slot = f->tx.aidx % NSLOT;
	uint64_t a = slot_addr(&f->tx, slot);
	memset(gpa(f, a, HDR), 0, HDR);
	make_eth(gpa(f, a + 64, 200), 200, 5);
	struct seg s[2] = { { a, HDR, false }, { a + 64, 200, false } };
	post(f, &f->tx, s, 2);
	notify(f, NET_TXQ);
	assert_int_equal(counters(f).tx_packets, 1);
	uint8_t buf[2048];
	bool seen = false;
	for (int i = 0; i < 20 && !seen; i++) {
		struct pollfd p = { snif, POLLIN, 0 };
		if (poll(&p, 1, 1000) <= 0)
			break;
		ssize_t k = recv(snif, buf, sizeof(buf), 0);
		seen = k == 200 && buf[12] == (TEST_ETHERTYPE >> 8) && buf[14] == (uint8_t)(5 + 14 * 7);
	}
	assert_true(seen);

	/* interface -> guest */
	post_rx(f, 8, 2048, true);
	uint8_t out[300];
	make_eth(out, 300, 9);
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(name),
				  .sll_halen = 6 };
	assert_int_equal(sendto(snif, out, 300, 0, (struct sockaddr *)&to, sizeof(to)), 300);
	bool got = false;
	for (int i = 0; i < 50 && !got; i++) {
		usleep(20000);
		pump(f);
		for (uint16_t u = 0; u < used_idx(f, &f->rx) && !got; u++) {
			uint32_t sl, len;
			rx_used(f, u, &sl, &len);
			uint8_t *p = gpa(f, slot_addr(&f->rx, sl), len);
			got = len == HDR + 300 && !memcmp(p + HDR, out, 300) &&
			      get16(f, slot_addr(&f->rx, sl) + NET_HDR_NUM_BUFFERS) == 1;
		}
	}
	assert_true(got);
	close(snif);
}

/* The public API attaches to a TAP by name. */
static void test_tap_by_name(void **state)
{
	(void)state;
	char name[IFNAMSIZ];
	int fd = tap_create(name, true);
	if (fd < 0) {
		if (getenv("CI"))
			fail_msg("cannot create a TAP interface here (root, /dev/net/tun), and CI is set: this test must run");
		print_message("SKIPPED: cannot create a TAP interface here (root, /dev/net/tun)\n");
		skip();
	}
	close(fd); /* it persists, detached */
	int before = count_fds();
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	microvm_net_config c = MICROVM_NET_CONFIG_INIT;
	c.backend = MICROVM_NET_BACKEND_TAP_NAME;
	c.tap_name = name;
	int r = microvm_add_net(vm, &c);
	if (r != 0)
		fail_msg("add_net tap %s: %s", name, microvm_last_error(vm));
	assert_true(vm->dev.virtio[0]->features & FEAT(VIRTIO_NET_F_CSUM));
	assert_int_equal(microvm_add_net(vm, &c), -EBUSY); /* attached once only */
	microvm_destroy(vm);
	assert_int_equal(count_fds(), before);
	tap_remove(name);
	assert_int_equal(if_nametoindex(name), 0);
}

/* ------------------------------------------------------------ public API */

static int add(microvm *vm, microvm_net_config c)
{
	return microvm_add_net(vm, &c);
}

static void test_api_bad_input(void **state)
{
	(void)state;
	int before = count_fds();
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	int sv[2], pp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	microvm_net_config ok = MICROVM_NET_CONFIG_INIT, c;
	ok.backend = MICROVM_NET_BACKEND_STREAM_FD;
	ok.fd = sv[0];
	microvm_net_port port = { MICROVM_NET_TCP, 8080, 80 };

	assert_int_equal(microvm_add_net(NULL, &ok), -EINVAL);
	assert_int_equal(microvm_add_net(vm, NULL), -EINVAL);
	c = ok, c.size = 8;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.flags = 0x80;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.backend = 0;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.backend = 9;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.reserved2 = 1;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.fd = -1;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.fd = 987654;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.fd = pp[0]; /* not a socket */
	assert_int_equal(add(vm, c), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "not a stream socket"));
	c = ok, c.backend = MICROVM_NET_BACKEND_TAP_FD, c.fd = pp[0]; /* not a TAP */
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.flags = MICROVM_NET_MAC_SET, c.mac[0] = 0x01; /* multicast */
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.ports = &port, c.n_ports = 1; /* forwards need user mode */
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.backend = MICROVM_NET_BACKEND_USER, c.n_ports = 1; /* ports NULL */
	assert_int_equal(add(vm, c), -EINVAL);
	microvm_net_port zero = { MICROVM_NET_TCP, 0, 80 }, proto = { 7, 1, 1 };
	c = ok, c.backend = MICROVM_NET_BACKEND_USER, c.ports = &zero, c.n_ports = 1;
	assert_int_equal(add(vm, c), -EINVAL);
	c.ports = &proto;
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.backend = MICROVM_NET_BACKEND_TAP_NAME, c.tap_name = NULL;
	assert_int_equal(add(vm, c), -EINVAL);
	c.tap_name = "mvm-no-such0";
	assert_int_equal(add(vm, c), -ENODEV);
	c.tap_name = "a-name-much-too-long-for-ifnamsiz";
	assert_int_equal(add(vm, c), -EINVAL);
	c = ok, c.backend = MICROVM_NET_BACKEND_USER, c.passt_path = "/nonexistent/passt";
	assert_int_equal(add(vm, c), -ENOENT);
	c.passt_path = "no-such-passt-binary";
	assert_int_equal(add(vm, c), -ENOENT);
	assert_non_null(strstr(microvm_last_error(vm), "not found"));
	c.passt_path = "/etc/hostname"; /* not executable */
	assert_true(add(vm, c) < 0);
	c.passt_path = "/bin/false"; /* exits at once */
	assert_int_equal(add(vm, c), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "exited during start-up"));

	/* Good ones: indexes in order; stats; link while configured. */
	assert_int_equal(add(vm, ok), 0);
	c = ok, c.flags = MICROVM_NET_LINK_DOWN | MICROVM_NET_MAC_SET;
	memcpy(c.mac, ((uint8_t[]){ 0x52, 0x54, 0, 1, 2, 3 }), 6);
	assert_int_equal(add(vm, c), 1);
	close(sv[0]); /* the VM has its own copy */
	microvm_net_counters st = MICROVM_NET_COUNTERS_INIT;
	assert_int_equal(microvm_net_stats(vm, 0, &st), 0);
	assert_int_equal(st.link_up, 1);
	assert_int_equal(st.rx_packets + st.tx_packets + st.tx_malformed, 0);
	assert_int_equal(microvm_net_stats(vm, 1, &st), 0);
	assert_int_equal(st.link_up, 0);
	assert_int_equal(microvm_net_set_link(vm, 1, 1), 0);
	assert_int_equal(microvm_net_stats(vm, 1, &st), 0);
	assert_int_equal(st.link_up, 1);
	assert_int_equal(microvm_net_stats(vm, 2, &st), -ENODEV);
	assert_int_equal(microvm_net_set_link(vm, 2, 1), -ENODEV);
	assert_int_equal(microvm_net_set_link(NULL, 0, 1), -EINVAL);
	assert_int_equal(microvm_net_stats(vm, 0, NULL), -EINVAL);
	st.size = 8;
	assert_int_equal(microvm_net_stats(vm, 0, &st), -EINVAL);
	/* the random MAC is unicast and locally administered */
	struct virtio_net *n = vm->dev.virtio[0]->opaque;
	const uint8_t *mac = virtio_net_config(n)->mac;
	assert_int_equal(mac[0] & 3, 2);
	assert_memory_equal(virtio_net_config(vm->dev.virtio[1]->opaque)->mac,
			    ((uint8_t[]){ 0x52, 0x54, 0, 1, 2, 3 }), 6);
	microvm_destroy(vm);
	close(sv[1]);
	close(pp[0]);
	close(pp[1]);
	assert_int_equal(count_fds(), before); /* nothing leaked */
}

/* ------------------------------------------------------------------ passt */

static bool have_passt(void)
{
	char path[256], err[256];
	return net_passt_find(NULL, path, sizeof(path), err, sizeof(err)) == 0;
}

static uint16_t free_port(int *keep)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t l = sizeof(sa);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &l), 0);
	if (keep) {
		assert_int_equal(listen(s, 1), 0);
		*keep = s;
	} else {
		close(s);
	}
	return ntohs(sa.sin_port);
}

static bool port_open(uint16_t port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(s);
	return ok;
}

/* User mode: passt runs while the VM exists, with the port forward, and is
 * gone (killed and reaped) after destroy. */
static void test_passt(void **state)
{
	(void)state;
	if (!have_passt()) {
		if (getenv("CI"))
			fail_msg("passt is not installed (apt-get install passt), and CI is set: this test must run");
		print_message("SKIPPED: passt is not installed (apt-get install passt)\n");
		skip();
	}
	int before = count_fds();
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	uint16_t hp = free_port(NULL);
	microvm_net_port fwd = { MICROVM_NET_TCP, hp, 80 };
	microvm_net_config c = MICROVM_NET_CONFIG_INIT;
	c.backend = MICROVM_NET_BACKEND_USER;
	c.ports = &fwd;
	c.n_ports = 1;
	int idx = microvm_add_net(vm, &c);
	if (idx < 0)
		fail_msg("add_net user: %s", microvm_last_error(vm));
	struct virtio_net *n = vm->dev.virtio[0]->opaque;
	pid_t pid = virtio_net_backend(n)->child;
	assert_true(pid > 0);
	assert_string_equal(net_backend_name(virtio_net_backend(n)), "passt");
	char path[64], comm[64] = "";
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(comm, sizeof(comm), fp));
	fclose(fp);
	assert_non_null(strstr(comm, "passt"));
	assert_int_equal(kill(pid, 0), 0);
	assert_true(port_open(hp)); /* passt listens on the forwarded port */
	microvm_destroy(vm);
	assert_int_equal(kill(pid, 0), -1); /* killed and reaped: no zombie */
	assert_int_equal(errno, ESRCH);
	assert_int_equal(count_fds(), before);

}

/* A "passt" that fails at start-up: add_net returns its message, and no
 * child or fd is left behind. */
static void test_passt_fails(void **state)
{
	(void)state;
	char dir[] = "/tmp/net-test-XXXXXX", exe[64];
	assert_non_null(mkdtemp(dir));
	snprintf(exe, sizeof(exe), "%s/passt", dir);
	FILE *fp = fopen(exe, "w");
	assert_non_null(fp);
	fputs("#!/bin/sh\necho 'Failed to send 9 bytes to syslog' >&2\n"
	      "echo \"fake passt: bad option $5 $6 $7 $8\" >&2\nexit 2\n", fp);
	fclose(fp);
	assert_int_equal(chmod(exe, 0755), 0);
	int before = count_fds();
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	microvm_net_port fwd = { MICROVM_NET_UDP, 5353, 53 };
	microvm_net_config c = MICROVM_NET_CONFIG_INIT;
	c.backend = MICROVM_NET_BACKEND_USER;
	c.passt_path = exe;
	c.ports = &fwd;
	c.n_ports = 1;
	assert_int_equal(microvm_add_net(vm, &c), -EINVAL);
	const char *e = microvm_last_error(vm);
	if (!strstr(e, "status 2") || !strstr(e, "fake passt: bad option --pid /proc/self/fd/4 -u 5353:53") ||
	    strstr(e, "syslog"))
		fail_msg("unexpected message: %s", e);
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* no child left */
	assert_int_equal(errno, ECHILD);
	microvm_destroy(vm);
	assert_int_equal(count_fds(), before);
	unlink(exe);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tx_framing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_mergeable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_no_mergeable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_no_buffers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_node, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tap, setup, teardown),
		cmocka_unit_test(test_tap_by_name),
		cmocka_unit_test(test_api_bad_input),
		cmocka_unit_test(test_passt),
		cmocka_unit_test(test_passt_fails),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
