/*
 * Unit tests for virtio-rng and virtio-console (lib/virtio/rng.c, console.c),
 * no /dev/kvm.
 *
 * A fake driver builds split rings (descriptor table, available ring, used
 * ring) in a 16 MiB guest RAM and the request engines of lib/virtio/devices.h
 * run over them, with pipes, a regular file or no fd as the console. Then the
 * public setters, and the registration microvm_start() does
 * (virtio_devices_add) on a VM that is never started, seen through its MMIO
 * bus.
 *
 * Every blocking risk is guarded by alarm(): a device that blocks on a full
 * pipe kills the test instead of hanging it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bus.h"
#include "arch/arch.h"
#include "memory.h"
#include "virtio/devices.h"
#include "vm_devices.h"
#include "virtio/mmio.h"
#include "virtio/queue.h"
#include "arch/x86_64/platform.h"
#include "vm.h"

#define RAM (16 * MIB)
#define RING0_GPA 0x10000ULL /* desc, avail at +0x8000, used at +0x10000 */
#define RING1_GPA 0x40000ULL
#define BUF_GPA 0x100000ULL
#define QSIZE 128

#define F_NEXT 1
#define F_WRITE 2

/* ---------------------------------------------------------- fake driver */

struct ring {
	struct virtq q;
	uint16_t aidx;      /* driver's avail->idx */
	uint16_t next_desc; /* next free descriptor (never reused in a test) */
};

struct fx {
	struct guest_mem mem;
	struct ring r[2];
	struct virtq_chain *chain;
	uint64_t buf_next;
	struct virtio_console *con;
};

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

static uint8_t *gpa(struct fx *f, uint64_t addr, uint64_t len)
{
	uint8_t *p = gm_ptr(&f->mem, addr, len);
	assert_non_null(p);
	return p;
}

static void put16(struct fx *f, uint64_t addr, uint16_t v)
{
	memcpy(gpa(f, addr, 2), &v, 2);
}

static uint16_t get16(struct fx *f, uint64_t addr)
{
	uint16_t v;
	memcpy(&v, gpa(f, addr, 2), 2);
	return v;
}

static uint32_t get32(struct fx *f, uint64_t addr)
{
	uint32_t v;
	memcpy(&v, gpa(f, addr, 4), 4);
	return v;
}

static void ring_init(struct fx *f, struct ring *r, uint64_t base)
{
	memset(gpa(f, base, 0x18000), 0, 0x18000);
	memset(r, 0, sizeof(*r));
	r->q.mem = &f->mem;
	r->q.size = QSIZE;
	r->q.desc_gpa = base;
	r->q.avail_gpa = base + 0x8000;
	r->q.used_gpa = base + 0x10000;
	r->q.ready = true;
	assert_int_equal(virtq_activate(&r->q), 0);
}

/* Guest buffer of @len bytes, zeroed. */
static uint64_t balloc(struct fx *f, uint32_t len)
{
	uint64_t a = f->buf_next;
	f->buf_next += (len + 15u) & ~15u;
	assert_true(f->buf_next <= RAM);
	memset(gpa(f, a, len), 0, len);
	return a;
}

static uint64_t balloc_data(struct fx *f, const void *data, uint32_t len)
{
	uint64_t a = balloc(f, len);
	memcpy(gpa(f, a, len), data, len);
	return a;
}

/* Chain @segs into fresh descriptors and make it available. Returns the
 * head descriptor index. */
static uint16_t post(struct fx *f, struct ring *r, const struct seg *segs, unsigned n)
{
	assert_true(n > 0 && r->next_desc + n <= QSIZE);
	uint16_t head = r->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)(head + i);
		uint16_t flags = (uint16_t)((segs[i].write ? F_WRITE : 0) | (i + 1 < n ? F_NEXT : 0));
		uint16_t next = (uint16_t)(i + 1 < n ? idx + 1 : 0);
		uint8_t *p = gpa(f, r->q.desc_gpa + 16ULL * idx, 16);
		memcpy(p, &segs[i].gpa, 8);
		memcpy(p + 8, &segs[i].len, 4);
		memcpy(p + 12, &flags, 2);
		memcpy(p + 14, &next, 2);
	}
	r->next_desc = (uint16_t)(head + n);
	put16(f, r->q.avail_gpa + 4 + 2ULL * (r->aidx % QSIZE), head);
	r->aidx++;
	put16(f, r->q.avail_gpa + 2, r->aidx);
	return head;
}

static uint16_t post1(struct fx *f, struct ring *r, uint64_t addr, uint32_t len, bool write)
{
	struct seg s = { addr, len, write };
	return post(f, r, &s, 1);
}

static uint16_t used_idx(struct fx *f, struct ring *r)
{
	return get16(f, r->q.used_gpa + 2);
}

static void used_elem(struct fx *f, struct ring *r, uint16_t slot, uint32_t *id, uint32_t *len)
{
	*id = get32(f, r->q.used_gpa + 4 + 8ULL * (slot % QSIZE));
	*len = get32(f, r->q.used_gpa + 8 + 8ULL * (slot % QSIZE));
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ------------------------------------------------------------- fixtures */

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(arch_ram_init(&f->mem, RAM), 0);
	f->chain = malloc(sizeof(*f->chain));
	assert_non_null(f->chain);
	f->con = virtio_console_new(NULL);
	assert_non_null(f->con);
	ring_init(f, &f->r[0], RING0_GPA);
	ring_init(f, &f->r[1], RING1_GPA);
	f->buf_next = BUF_GPA;
	alarm(30); /* a device that blocks fails the test instead of hanging */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	alarm(0);
	virtio_console_free(f->con);
	free(f->chain);
	gm_release(&f->mem);
	free(f);
	return 0;
}

static void make_pipe(int p[2], bool nonblock_write)
{
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	if (nonblock_write)
		assert_int_equal(fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK), 0);
}

/* Fill the pipe until it takes nothing more (the write end keeps its
 * blocking mode afterwards). Returns the bytes written. */
static size_t fill_pipe(int wfd)
{
	int fl = fcntl(wfd, F_GETFL);
	assert_int_equal(fcntl(wfd, F_SETFL, fl | O_NONBLOCK), 0);
	static const uint8_t junk[4096] = { 0 };
	size_t total = 0;
	for (;;) {
		ssize_t n = write(wfd, junk, sizeof(junk));
		if (n > 0) {
			total += (size_t)n;
			continue;
		}
		assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
		break;
	}
	/* Also fill the last partial page, byte by byte. */
	while (write(wfd, junk, 1) == 1)
		total++;
	assert_int_equal(fcntl(wfd, F_SETFL, fl), 0);
	return total;
}

/* Read everything the pipe holds now into @dst (at most @cap). */
static size_t drain_pipe(int rfd, uint8_t *dst, size_t cap)
{
	int fl = fcntl(rfd, F_GETFL);
	assert_int_equal(fcntl(rfd, F_SETFL, fl | O_NONBLOCK), 0);
	size_t total = 0;
	uint8_t sink[4096];
	for (;;) {
		uint8_t *to = dst && total < cap ? dst + total : sink;
		size_t room = dst && total < cap ? cap - total : sizeof(sink);
		ssize_t n = read(rfd, to, room < sizeof(sink) ? room : sizeof(sink));
		if (n <= 0)
			break;
		if (!(dst && total < cap))
			fail_msg("pipe held more than expected");
		total += (size_t)n;
	}
	assert_int_equal(fcntl(rfd, F_SETFL, fl), 0);
	return total;
}

static size_t pipe_bytes(int rfd)
{
	int n = 0;
	assert_int_equal(ioctl(rfd, FIONREAD, &n), 0);
	return (size_t)n;
}

/* ----------------------------------------------------------- virtio-rng */

static void test_rng_fills(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	uint64_t a = balloc(f, 100), b = balloc(f, 156), c = balloc(f, 256);
	struct seg two[2] = { { a, 100, true }, { b, 156, true } };
	uint16_t h1 = post(f, r, two, 2);
	uint16_t h2 = post1(f, r, c, 256, true);

	uint32_t pushed = 0;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), 0);
	assert_int_equal(pushed, 2);
	assert_int_equal(used_idx(f, r), 2);
	uint32_t id, len;
	used_elem(f, r, 0, &id, &len);
	assert_int_equal(id, h1);
	assert_int_equal(len, 256);
	used_elem(f, r, 1, &id, &len);
	assert_int_equal(id, h2);
	assert_int_equal(len, 256);

	uint8_t first[256];
	memcpy(first, gpa(f, a, 100), 100);
	memcpy(first + 100, gpa(f, b, 156), 156);
	assert_false(all_zero(first, 100));
	assert_false(all_zero(first + 100, 156));
	assert_false(all_zero(gpa(f, c, 256), 256));
	assert_memory_not_equal(first, gpa(f, c, 256), 256);

	/* Nothing more: nothing pushed. */
	pushed = 0;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), 0);
	assert_int_equal(pushed, 0);
}

static void test_rng_cap(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	uint32_t big = VIRTIO_RNG_MAX_REQUEST + 4096;
	uint64_t a = balloc(f, big);
	post1(f, r, a, big, true);
	uint32_t pushed = 0, id, len;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), 0);
	assert_int_equal(pushed, 1);
	used_elem(f, r, 0, &id, &len);
	assert_int_equal(len, VIRTIO_RNG_MAX_REQUEST);
	const uint8_t *p = gpa(f, a, big);
	assert_false(all_zero(p + VIRTIO_RNG_MAX_REQUEST - 256, 256));
	assert_true(all_zero(p + VIRTIO_RNG_MAX_REQUEST, 4096)); /* not written */
}

static void test_rng_readable_is_error(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	/* A good request first: it is served before the bad one is seen. */
	post1(f, r, balloc(f, 32), 32, true);
	post1(f, r, balloc(f, 32), 32, false); /* device-readable only */
	uint32_t pushed = 0;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), -EIO);
	assert_int_equal(pushed, 1);
	assert_int_equal(used_idx(f, r), 1);

	/* Readable + writable is no better. */
	ring_init(f, r, RING0_GPA);
	struct seg mixed[2] = { { balloc(f, 8), 8, false }, { balloc(f, 8), 8, true } };
	post(f, r, mixed, 2);
	pushed = 0;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), -EIO);
	assert_int_equal(pushed, 0);
	assert_int_equal(used_idx(f, r), 0);
}

static void test_rng_bad_ring(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	/* avail entry naming a descriptor outside the table */
	put16(f, r->q.avail_gpa + 4, QSIZE + 3);
	put16(f, r->q.avail_gpa + 2, 1);
	uint32_t pushed = 0;
	assert_int_equal(virtio_rng_process(&r->q, f->chain, &pushed), -EIO);
	assert_int_equal(pushed, 0);
}

/* -------------------------------------------------- virtio-console: out */

static void test_console_tx_pipe(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[1];
	int p[2];
	make_pipe(p, false);
	virtio_console_set_fds(f->con, -1, p[1]);

	struct seg hw[2] = { { balloc_data(f, "hello ", 6), 6, false },
			     { balloc_data(f, "world", 5), 5, false } };
	uint16_t h1 = post(f, r, hw, 2);
	uint16_t h2 = post1(f, r, balloc_data(f, "!\n", 2), 2, false);

	uint32_t pushed = 0, id, len;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_DONE);
	assert_int_equal(pushed, 2);
	assert_int_equal(used_idx(f, r), 2);
	used_elem(f, r, 0, &id, &len);
	assert_int_equal(id, h1);
	assert_int_equal(len, 0);
	used_elem(f, r, 1, &id, &len);
	assert_int_equal(id, h2);
	assert_int_equal(len, 0);
	assert_int_equal(virtio_console_tx_buffered(f->con), 0);

	char out[64];
	size_t n = drain_pipe(p[0], (uint8_t *)out, sizeof(out));
	assert_int_equal(n, 13);
	assert_memory_equal(out, "hello world!\n", 13);
	close(p[0]);
	close(p[1]);
}

#define CHUNK (16u * 1024u)
#define NCHUNKS 8u

/* Guest output larger than the host buffer into a full pipe: the device
 * takes at most the buffer's worth, leaves the rest in the ring, and
 * finishes once the test drains the pipe. */
static void backpressure(struct fx *f, bool nonblock, bool one_big_chain)
{
	struct ring *r = &f->r[1];
	int p[2];
	make_pipe(p, nonblock);
	size_t filler = fill_pipe(p[1]);
	assert_true(filler > 0);
	virtio_console_set_fds(f->con, -1, p[1]);

	uint32_t total = CHUNK * NCHUNKS;
	uint8_t *expect = malloc(total);
	assert_non_null(expect);
	for (uint32_t i = 0; i < total; i++)
		expect[i] = (uint8_t)(i * 7 + i / 251);
	unsigned nchains = one_big_chain ? 1 : NCHUNKS;
	if (one_big_chain)
		post1(f, r, balloc_data(f, expect, total), total, false);
	else
		for (unsigned i = 0; i < NCHUNKS; i++)
			post1(f, r, balloc_data(f, expect + i * CHUNK, CHUNK), CHUNK, false);

	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_BLOCKED);
	assert_int_equal(virtio_console_tx_buffered(f->con), VIRTIO_CONSOLE_TX_BUF);
	if (one_big_chain) {
		assert_int_equal(pushed, 0); /* held: only part of it copied */
		assert_int_equal(used_idx(f, r), 0);
	} else {
		uint32_t fit = VIRTIO_CONSOLE_TX_BUF / CHUNK;
		assert_int_equal(pushed, fit);
		assert_int_equal(used_idx(f, r), fit);
		assert_int_equal(r->q.last_avail, fit); /* the rest stays in the ring */
	}
	/* Still full: nothing moves, nothing more is taken. */
	uint16_t before = r->q.last_avail;
	pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_BLOCKED);
	assert_int_equal(pushed, 0);
	assert_int_equal(r->q.last_avail, before);
	assert_int_equal(pipe_bytes(p[0]), filler);

	/* Drain, let the device continue (what EPOLLOUT would trigger),
	 * until everything is out. */
	size_t cap = filler + total;
	uint8_t *got = malloc(cap);
	assert_non_null(got);
	size_t have = 0;
	int rounds = 0, res = VCON_TX_BLOCKED;
	while (res == VCON_TX_BLOCKED || pipe_bytes(p[0]) > 0) {
		assert_true(++rounds < 10000);
		have += drain_pipe(p[0], got + have, cap - have);
		pushed = 0;
		res = virtio_console_tx(f->con, &r->q, &pushed);
		assert_true(res == VCON_TX_DONE || res == VCON_TX_BLOCKED);
		assert_true(virtio_console_tx_buffered(f->con) <= VIRTIO_CONSOLE_TX_BUF);
	}
	assert_int_equal(used_idx(f, r), nchains);
	assert_int_equal(virtio_console_tx_buffered(f->con), 0);
	assert_int_equal(have, cap);
	assert_true(all_zero(got, filler));
	assert_memory_equal(got + filler, expect, total);
	free(got);
	free(expect);
	close(p[0]);
	close(p[1]);
}

static void test_console_tx_backpressure_blocking_fd(void **state)
{
	backpressure(*state, false, false);
}

static void test_console_tx_backpressure_nonblocking_fd(void **state)
{
	backpressure(*state, true, false);
}

static void test_console_tx_backpressure_big_chain(void **state)
{
	backpressure(*state, false, true);
}

static void test_console_tx_discard(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[1];
	virtio_console_set_fds(f->con, -1, -1);
	for (int i = 0; i < 5; i++)
		post1(f, r, balloc_data(f, "xyz", 3), 3, false);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_DONE);
	assert_int_equal(pushed, 5);
	assert_int_equal(used_idx(f, r), 5);
	assert_int_equal(virtio_console_tx_buffered(f->con), 0);
}

static void test_console_tx_file(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[1];
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	int fd = fileno(tmp);
	virtio_console_set_fds(f->con, -1, fd);
	uint32_t big = 100 * 1024; /* more than the buffer, one chain */
	uint8_t *data = malloc(big);
	assert_non_null(data);
	for (uint32_t i = 0; i < big; i++)
		data[i] = (uint8_t)(i % 253);
	post1(f, r, balloc_data(f, data, big), big, false);
	post1(f, r, balloc_data(f, "end", 3), 3, false);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_DONE);
	assert_int_equal(pushed, 2);
	uint8_t *back = malloc(big + 3);
	assert_non_null(back);
	assert_int_equal(pread(fd, back, big + 3, 0), (ssize_t)(big + 3));
	assert_memory_equal(back, data, big);
	assert_memory_equal(back + big, "end", 3);
	free(back);
	free(data);
	fclose(tmp);
}

static void test_console_tx_broken_fd(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[1];
	int p[2];
	make_pipe(p, false);
	close(p[0]); /* nobody reads: EPIPE */
	void (*old)(int) = signal(SIGPIPE, SIG_IGN);
	virtio_console_set_fds(f->con, -1, p[1]);
	post1(f, r, balloc_data(f, "lost", 4), 4, false);
	post1(f, r, balloc_data(f, "lost", 4), 4, false);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), VCON_TX_DONE);
	assert_int_equal(pushed, 2); /* discarded, the guest is not stalled */
	assert_int_equal(virtio_console_tx_buffered(f->con), 0);
	signal(SIGPIPE, old);
	close(p[1]);
}

static void test_console_tx_bad_ring(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[1];
	virtio_console_set_fds(f->con, -1, -1);
	post1(f, r, RAM - 2, 64, false); /* buffer runs past the end of RAM */
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, &r->q, &pushed), -EIO);
	assert_int_equal(pushed, 0);
	assert_int_equal(used_idx(f, r), 0);
}

static void test_console_emerg_write(void **state)
{
	struct fx *f = *state;
	int p[2];
	make_pipe(p, false);
	virtio_console_set_fds(f->con, -1, p[1]);
	virtio_console_emerg_write(f->con, 'E');
	virtio_console_emerg_write(f->con, '!');
	assert_int_equal(virtio_console_tx_buffered(f->con), 2);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_tx(f->con, NULL, &pushed), VCON_TX_DONE);
	char out[4];
	assert_int_equal(drain_pipe(p[0], (uint8_t *)out, sizeof(out)), 2);
	assert_memory_equal(out, "E!", 2);
	close(p[0]);
	close(p[1]);
}

/* --------------------------------------------------- virtio-console: in */

static void test_console_rx(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	int p[2];
	make_pipe(p, false); /* read end blocking: the device must not block */
	virtio_console_set_fds(f->con, p[0], -1);
	uint32_t pushed = 0, id, len;

	/* No input yet, a buffer posted: idle (watch the fd). */
	uint64_t b0 = balloc(f, 64);
	uint16_t h0 = post1(f, r, b0, 64, true);
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_IDLE);
	assert_int_equal(pushed, 0);
	assert_int_equal(r->q.last_avail, 0);

	assert_int_equal(write(p[1], "abc", 3), 3);
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_IDLE);
	assert_int_equal(pushed, 1);
	used_elem(f, r, 0, &id, &len);
	assert_int_equal(id, h0);
	assert_int_equal(len, 3);
	assert_memory_equal(gpa(f, b0, 3), "abc", 3);

	/* Input but no buffer: starved, the input stays in the pipe. */
	assert_int_equal(write(p[1], "defgh", 5), 5);
	pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_STARVED);
	assert_int_equal(pushed, 0);
	assert_int_equal(pipe_bytes(p[0]), 5);

	/* Two 2-byte buffers (one of them split in two descriptors): filled,
	 * then starved again with one byte left. */
	uint64_t b1 = balloc(f, 2), b2a = balloc(f, 1), b2b = balloc(f, 1);
	post1(f, r, b1, 2, true);
	struct seg split[2] = { { b2a, 1, true }, { b2b, 1, true } };
	post(f, r, split, 2);
	pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_STARVED);
	assert_int_equal(pushed, 2);
	assert_int_equal(used_idx(f, r), 3);
	used_elem(f, r, 1, &id, &len);
	assert_int_equal(len, 2);
	used_elem(f, r, 2, &id, &len);
	assert_int_equal(len, 2);
	assert_memory_equal(gpa(f, b1, 2), "de", 2);
	assert_memory_equal(gpa(f, b2a, 1), "f", 1);
	assert_memory_equal(gpa(f, b2b, 1), "g", 1);
	assert_int_equal(pipe_bytes(p[0]), 1);

	uint64_t b3 = balloc(f, 16);
	post1(f, r, b3, 16, true);
	pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_IDLE);
	assert_int_equal(pushed, 1);
	used_elem(f, r, 3, &id, &len);
	assert_int_equal(len, 1);
	assert_memory_equal(gpa(f, b3, 1), "h", 1);

	/* End of input: the posted buffer is not consumed. */
	post1(f, r, balloc(f, 16), 16, true);
	close(p[1]);
	uint16_t before = r->q.last_avail;
	pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_EOF);
	assert_int_equal(pushed, 0);
	assert_int_equal(r->q.last_avail, before);
	assert_int_equal(used_idx(f, r), 4);
	/* and it stays ended */
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_EOF);
	close(p[0]);
}

static void test_console_rx_batch_and_file(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	int fd = fileno(tmp);
	uint32_t n = 2 * QSIZE + 10; /* more than the buffers take */
	char *data = malloc(n);
	assert_non_null(data);
	for (uint32_t i = 0; i < n; i++)
		data[i] = (char)('a' + i % 26);
	assert_int_equal(pwrite(fd, data, n, 0), (ssize_t)n);
	virtio_console_set_fds(f->con, fd, -1);

	/* QSIZE buffers of 2 bytes; batch limit first, then the rest. */
	uint64_t base = balloc(f, 2 * QSIZE);
	for (unsigned i = 0; i < QSIZE; i++)
		post1(f, r, base + 2 * i, 2, true);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_MORE);
	assert_true(VIRTIO_CONSOLE_RX_BATCH < QSIZE);
	assert_int_equal(pushed, VIRTIO_CONSOLE_RX_BATCH);
	pushed = 0;
	/* Unbatched (a file read on notification): until buffers run out. */
	int res = virtio_console_rx(f->con, &r->q, 0, &pushed);
	assert_int_equal(res, VCON_RX_STARVED);
	assert_int_equal(used_idx(f, r), QSIZE);
	assert_memory_equal(gpa(f, base, 2 * QSIZE), data, 2 * QSIZE);
	free(data);
	fclose(tmp);
}

static void test_console_rx_no_fd(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	virtio_console_set_fds(f->con, -1, -1);
	post1(f, r, balloc(f, 8), 8, true);
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), VCON_RX_EOF);
	assert_int_equal(pushed, 0);
	assert_int_equal(r->q.last_avail, 0);
}

static void test_console_rx_bad_ring(void **state)
{
	struct fx *f = *state;
	struct ring *r = &f->r[0];
	int p[2];
	make_pipe(p, false);
	virtio_console_set_fds(f->con, p[0], -1);
	assert_int_equal(write(p[1], "x", 1), 1);
	put16(f, r->q.avail_gpa + 2, QSIZE + 1); /* more entries than the queue */
	uint32_t pushed = 0;
	assert_int_equal(virtio_console_rx(f->con, &r->q, 1, &pushed), -EIO);
	assert_int_equal(pipe_bytes(p[0]), 1);
	close(p[0]);
	close(p[1]);
}

/* ------------------------------------------------------ API + registration */

static void test_api_setters(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_console_type(NULL, MICROVM_CONSOLE_VIRTIO), -EINVAL);
	assert_int_equal(microvm_set_rng(NULL, 1), -EINVAL);

	assert_int_equal(vm->cfg.console_type, MICROVM_CONSOLE_SERIAL); /* defaults */
	assert_false(vm->cfg.rng_enabled);
	assert_int_equal(microvm_set_console_type(vm, 2), -EINVAL);
	assert_non_null(strstr(microvm_last_error(vm), "console type"));
	assert_int_equal(microvm_set_console_type(vm, UINT32_MAX), -EINVAL);
	assert_int_equal(vm->cfg.console_type, MICROVM_CONSOLE_SERIAL);
	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), 0);
	assert_int_equal(vm->cfg.console_type, MICROVM_CONSOLE_VIRTIO);
	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_SERIAL), 0);
	assert_int_equal(vm->cfg.console_type, MICROVM_CONSOLE_SERIAL);

	assert_int_equal(microvm_set_rng(vm, 1), 0);
	assert_true(vm->cfg.rng_enabled);
	assert_int_equal(microvm_set_rng(vm, 0), 0);
	assert_false(vm->cfg.rng_enabled);
	assert_int_equal(microvm_set_rng(vm, 42), 0);
	assert_true(vm->cfg.rng_enabled);

	/* Setters need a CONFIGURED VM. Starting needs KVM, so pretend. */
	pthread_mutex_lock(&vm->run.lock);
	vm->run.state = MICROVM_STATE_RUNNING;
	pthread_mutex_unlock(&vm->run.lock);
	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), -EBUSY);
	assert_int_equal(microvm_set_console_type(vm, 2), -EBUSY);
	assert_int_equal(microvm_set_rng(vm, 0), -EBUSY);
	pthread_mutex_lock(&vm->run.lock);
	vm->run.state = MICROVM_STATE_CONFIGURED;
	pthread_mutex_unlock(&vm->run.lock);
	assert_int_equal(vm->cfg.console_type, MICROVM_CONSOLE_SERIAL);
	assert_true(vm->cfg.rng_enabled);
	microvm_destroy(vm);
}

static uint32_t mmio_read32(struct microvm *vm, uint64_t addr)
{
	uint32_t v = 0;
	assert_true(bus_access(&vm->kvm.mmio, addr, &v, 4, false));
	return v;
}

static void mmio_write32(struct microvm *vm, uint64_t addr, uint32_t v)
{
	assert_true(bus_access(&vm->kvm.mmio, addr, &v, 4, true));
}

static void test_devices_add(void **state)
{
	(void)state;
	microvm *vm;
	int p[2];
	make_pipe(p, false);
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_console(vm, p[0], p[1]), 0);

	/* Nothing chosen: nothing added, the UART keeps the console. */
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 0);
	assert_int_equal(vm->dev.platform->serial.in_fd, p[0]);
	assert_int_equal(vm->dev.platform->serial.out_fd, p[1]);

	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), 0);
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 2);
	assert_non_null(vm->dev.vconsole);
	assert_non_null(vm->dev.vrng);
	/* The UART is still there, connected to nothing. */
	assert_int_equal(vm->dev.platform->serial.in_fd, -1);
	assert_int_equal(vm->dev.platform->serial.out_fd, -1);
	assert_non_null(bus_find(&vm->kvm.pio, SERIAL_COM1_BASE, 1));

	/* A retried start adds nothing twice. */
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 2);

	/* What the guest sees through the transport. */
	struct virtio_device *con = vm->dev.virtio[0], *rng = vm->dev.virtio[1];
	assert_int_equal(mmio_read32(vm, con->base + 0x000), 0x74726976); /* "virt" */
	assert_int_equal(mmio_read32(vm, con->base + 0x008), VIRTIO_ID_CONSOLE);
	assert_int_equal(mmio_read32(vm, rng->base + 0x008), VIRTIO_ID_ENTROPY);
	mmio_write32(vm, con->base + 0x014, 0); /* DeviceFeaturesSel */
	uint32_t feat = mmio_read32(vm, con->base + 0x010);
	assert_true(feat & (1u << VIRTIO_CONSOLE_F_EMERG_WRITE));
	assert_false(feat & (1u << VIRTIO_CONSOLE_F_MULTIPORT));
	assert_false(feat & (1u << VIRTIO_CONSOLE_F_SIZE));
	mmio_write32(vm, rng->base + 0x014, 0);
	/* rng: no device feature bits (0..23), only the transport's */
	assert_int_equal(mmio_read32(vm, rng->base + 0x010) & 0xffffffu, 0);
	assert_int_equal(feat & 0xffffffu, 1u << VIRTIO_CONSOLE_F_EMERG_WRITE);
	/* Queues: console has 2, rng 1 (QueueNumMax 0 for the others). */
	mmio_write32(vm, con->base + 0x030, 1);
	assert_int_equal(mmio_read32(vm, con->base + 0x034), VIRTQ_MAX_SIZE);
	mmio_write32(vm, con->base + 0x030, 2);
	assert_int_equal(mmio_read32(vm, con->base + 0x034), 0);
	mmio_write32(vm, rng->base + 0x030, 1);
	assert_int_equal(mmio_read32(vm, rng->base + 0x034), 0);
	/* Console config: max_nr_ports 1, cols/rows 0. */
	assert_int_equal(mmio_read32(vm, con->base + 0x100 + VIRTIO_CONSOLE_CFG_MAX_NR_PORTS), 1);
	assert_int_equal(mmio_read32(vm, con->base + 0x100 + VIRTIO_CONSOLE_CFG_COLS), 0);

	/* Back to the serial console before a (retried) start: the UART gets
	 * the fds again, the console device kept from before gets none. */
	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_SERIAL), 0);
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 2);
	assert_int_equal(vm->dev.platform->serial.in_fd, p[0]);
	assert_int_equal(vm->dev.platform->serial.out_fd, p[1]);

	microvm_destroy(vm); /* frees both devices through ops->release */
	close(p[0]);
	close(p[1]);
}

static void test_devices_add_rng_only(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	assert_int_equal(virtio_devices_add(vm), 0);
	assert_int_equal(vm->dev.nr_virtio, 1);
	assert_null(vm->dev.vconsole);
	assert_int_equal(mmio_read32(vm, vm->dev.virtio[0]->base + 0x008), VIRTIO_ID_ENTROPY);
	microvm_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rng_fills, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rng_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rng_readable_is_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rng_bad_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_backpressure_blocking_fd, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_backpressure_nonblocking_fd, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_backpressure_big_chain, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_broken_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_tx_bad_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_emerg_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_rx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_rx_batch_and_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_rx_no_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_console_rx_bad_ring, setup, teardown),
		cmocka_unit_test(test_api_setters),
		cmocka_unit_test(test_devices_add),
		cmocka_unit_test(test_devices_add_rng_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
