/*
 * Unit tests for split virtqueues (lib/virtio/queue.c), no /dev/kvm.
 *
 * A fake driver builds the descriptor table, available ring and indirect
 * tables in a 16 MiB guest RAM and checks what the device side makes of
 * them: well-formed chains (single, out+in, indirect, batches, 16-bit index
 * wraparound, notification suppression) and every malformed ring a hostile
 * guest can write, each of which must give -EIO without touching memory
 * outside guest RAM. A seeded random loop feeds garbage rings. The
 * pop-or-enable-notification helper is checked against the driver adding a
 * chain between its empty look and its second look.
 *
 * Zero-length descriptors (documented choice of queue.c): accepted anywhere,
 * their address is not checked, they yield no iovec and no length, but they
 * count toward the chain-length bound and their WRITE flag must still respect
 * "readable before writable".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "arch/arch.h"
#include "arch/x86_64/layout.h"
#include "memory.h"
#include "virtio/queue.h"

#define RAM (16 * MIB)

#define DESC_GPA 0x10000ULL  /* up to 1024 * 16 bytes */
#define AVAIL_GPA 0x20000ULL /* up to 6 + 2 * 1024 */
#define USED_GPA 0x30000ULL  /* up to 6 + 8 * 1024 */
#define IND_GPA 0x40000ULL   /* indirect tables, up to 1024 * 16 */
#define IND2_GPA 0x50000ULL
#define BUF_GPA 0x100000ULL

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

struct fx {
	struct guest_mem mem;
	struct virtq q;
	struct virtq_chain *c;
	uint16_t aidx; /* driver's avail->idx */
};

/* ---- fake driver */

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

/* Descriptor @i of the table at @table. */
static void desc_at(struct fx *f, uint64_t table, uint32_t i, uint64_t addr, uint32_t len,
		    uint16_t flags, uint16_t next)
{
	uint8_t *p = gpa(f, table + 16ULL * i, 16);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void desc(struct fx *f, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	desc_at(f, f->q.desc_gpa, i, addr, len, flags, next);
}

static void avail_set_idx(struct fx *f, uint16_t idx)
{
	put16(f, f->q.avail_gpa + 2, idx);
}

/* Put @head in the next avail slot without publishing it. */
static void avail_put(struct fx *f, uint16_t head)
{
	put16(f, f->q.avail_gpa + 4 + 2ULL * (f->aidx % f->q.size), head);
	f->aidx++;
}

static void avail_publish(struct fx *f)
{
	avail_set_idx(f, f->aidx);
}

static void avail_add(struct fx *f, uint16_t head)
{
	avail_put(f, head);
	avail_publish(f);
}

static void avail_flags(struct fx *f, uint16_t v)
{
	put16(f, f->q.avail_gpa, v);
}

static void used_event(struct fx *f, uint16_t v)
{
	put16(f, f->q.avail_gpa + 4 + 2ULL * f->q.size, v);
}

static uint16_t used_idx(struct fx *f)
{
	return get16(f, f->q.used_gpa + 2);
}

static void used_elem(struct fx *f, uint32_t slot, uint32_t *id, uint32_t *len)
{
	*id = get32(f, f->q.used_gpa + 4 + 8ULL * slot);
	*len = get32(f, f->q.used_gpa + 8 + 8ULL * slot);
}

static uint16_t avail_event(struct fx *f)
{
	return get16(f, f->q.used_gpa + 4 + 8ULL * f->q.size);
}

/* Fresh rings at the standard addresses, activated. */
static void queue_init(struct fx *f, uint16_t size, bool indirect, bool event_idx)
{
	memset(gpa(f, DESC_GPA, 0x50000), 0, 0x50000);
	memset(&f->q, 0, sizeof(f->q));
	f->q.mem = &f->mem;
	f->q.size = size;
	f->q.desc_gpa = DESC_GPA;
	f->q.avail_gpa = AVAIL_GPA;
	f->q.used_gpa = USED_GPA;
	f->q.ready = true;
	f->q.indirect = indirect;
	f->q.event_idx = event_idx;
	assert_int_equal(virtq_activate(&f->q), 0);
	f->aidx = 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(arch_ram_init(&f->mem, RAM), 0);
	f->c = calloc(1, sizeof(*f->c));
	assert_non_null(f->c);
	queue_init(f, 8, true, false);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	gm_release(&f->mem);
	free(f->c);
	free(f);
	return 0;
}

static void assert_iov(struct fx *f, uint32_t i, uint64_t addr, uint64_t len)
{
	assert_ptr_equal(f->c->iov[i].iov_base, f->mem.host + addr);
	assert_int_equal(f->c->iov[i].iov_len, len);
}

/*
 * Offer @head in the slot the device looks at next and expect it to be
 * rejected, consuming nothing. A rejected entry stays where it is, so the
 * next expect_eio() on the same queue overwrites that same slot.
 */
static void expect_eio(struct fx *f, uint16_t head)
{
	uint16_t before = f->q.last_avail;
	f->aidx = before;
	avail_add(f, head);
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
	assert_int_equal(f->q.last_avail, before);
	/* Stays broken: a retry fails the same way, it does not skip ahead. */
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
}

/* ---- well-formed rings */

static void test_empty(void **state)
{
	struct fx *f = *state;
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
	/* Entries written but idx not published yet: still empty. */
	desc(f, 0, BUF_GPA, 10, 0, 0);
	avail_put(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
	avail_publish(f);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
}

static void test_single_buffer(void **state)
{
	struct fx *f = *state;
	desc(f, 5, BUF_GPA + 3, 100, 0, 0);
	avail_add(f, 5);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->head, 5);
	assert_int_equal(f->c->n_out, 1);
	assert_int_equal(f->c->n_in, 0);
	assert_int_equal(f->c->out_len, 100);
	assert_int_equal(f->c->in_len, 0);
	assert_iov(f, 0, BUF_GPA + 3, 100);
	assert_int_equal(f->q.last_avail, 1);
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
}

static void test_chain_out_in(void **state)
{
	struct fx *f = *state;
	/* 3 -> 5 -> 1 -> 7: two readable, two writable, out of index order. */
	desc(f, 3, BUF_GPA, 16, F_NEXT, 5);
	desc(f, 5, BUF_GPA + 0x1000, 200, F_NEXT, 1);
	desc(f, 1, BUF_GPA + 0x2000, 512, F_NEXT | F_WRITE, 7);
	desc(f, 7, BUF_GPA + 0x3000, 1, F_WRITE, 0);
	avail_add(f, 3);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->head, 3);
	assert_int_equal(f->c->n_out, 2);
	assert_int_equal(f->c->n_in, 2);
	assert_int_equal(f->c->out_len, 216);
	assert_int_equal(f->c->in_len, 513);
	assert_iov(f, 0, BUF_GPA, 16);
	assert_iov(f, 1, BUF_GPA + 0x1000, 200);
	assert_iov(f, 2, BUF_GPA + 0x2000, 512);
	assert_iov(f, 3, BUF_GPA + 0x3000, 1);

	assert_int_equal(virtq_push(&f->q, 3, 300), 0);
	assert_int_equal(used_idx(f), 1);
	uint32_t id, len;
	used_elem(f, 0, &id, &len);
	assert_int_equal(id, 3);
	assert_int_equal(len, 300);
}

static void test_chain_whole_table(void **state)
{
	struct fx *f = *state;
	/* A chain through all 8 descriptors is the longest legal one. */
	for (uint16_t i = 0; i < 8; i++)
		desc(f, i, BUF_GPA + 0x100ULL * i, 8, i < 7 ? F_NEXT : 0, (uint16_t)(i + 1));
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, 8);
	assert_int_equal(f->c->out_len, 64);
	assert_iov(f, 7, BUF_GPA + 0x700, 8);
}

static void test_writable_only(void **state)
{
	struct fx *f = *state;
	desc(f, 0, BUF_GPA, 64, F_WRITE | F_NEXT, 1);
	desc(f, 1, BUF_GPA + 64, 64, F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, 0);
	assert_int_equal(f->c->n_in, 2);
	assert_int_equal(f->c->in_len, 128);
}

static void test_indirect(void **state)
{
	struct fx *f = *state;
	/* Table of 4 entries chained 0 -> 2 -> 1 -> 3; entry 3 writable. */
	desc_at(f, IND_GPA, 0, BUF_GPA, 10, F_NEXT, 2);
	desc_at(f, IND_GPA, 2, BUF_GPA + 0x100, 20, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, BUF_GPA + 0x200, 30, F_NEXT | F_WRITE, 3);
	desc_at(f, IND_GPA, 3, BUF_GPA + 0x300, 40, F_WRITE, 0);
	/* The WRITE flag on the pointing descriptor is ignored (spec). */
	desc(f, 6, IND_GPA, 4 * 16, F_INDIRECT | F_WRITE, 0);
	avail_add(f, 6);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->head, 6);
	assert_int_equal(f->c->n_out, 2);
	assert_int_equal(f->c->n_in, 2);
	assert_int_equal(f->c->out_len, 30);
	assert_int_equal(f->c->in_len, 70);
	assert_iov(f, 0, BUF_GPA, 10);
	assert_iov(f, 1, BUF_GPA + 0x100, 20);
	assert_iov(f, 2, BUF_GPA + 0x200, 30);
	assert_iov(f, 3, BUF_GPA + 0x300, 40);
	assert_int_equal(virtq_push(&f->q, 6, 70), 0);
	uint32_t id, len;
	used_elem(f, 0, &id, &len);
	assert_int_equal(id, 6);
	assert_int_equal(len, 70);
}

static void test_indirect_unaligned_and_large(void **state)
{
	struct fx *f = *state;
	/* An indirect table at an odd address, larger than the queue (8). */
	const uint64_t t = IND_GPA + 3;
	for (uint32_t i = 0; i < 20; i++)
		desc_at(f, t, i, BUF_GPA + 16ULL * i, 16, i < 19 ? F_NEXT : F_WRITE,
			(uint16_t)(i + 1));
	desc(f, 0, t, 20 * 16, F_INDIRECT, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, 19);
	assert_int_equal(f->c->n_in, 1);
	assert_iov(f, 19, BUF_GPA + 16 * 19, 16);
}

static void test_direct_then_indirect(void **state)
{
	struct fx *f = *state;
	/* Spec: the device must handle plain descriptors followed by one
	 * indirect descriptor. */
	desc(f, 2, BUF_GPA, 12, F_NEXT, 4);
	desc(f, 4, IND_GPA, 32, F_INDIRECT, 0);
	desc_at(f, IND_GPA, 0, BUF_GPA + 0x100, 100, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, BUF_GPA + 0x200, 50, F_WRITE, 0);
	avail_add(f, 2);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, 2);
	assert_int_equal(f->c->n_in, 1);
	assert_int_equal(f->c->out_len, 112);
	assert_int_equal(f->c->in_len, 50);
	assert_iov(f, 0, BUF_GPA, 12);
	assert_iov(f, 1, BUF_GPA + 0x100, 100);
	assert_iov(f, 2, BUF_GPA + 0x200, 50);
}

static void test_batch(void **state)
{
	struct fx *f = *state;
	desc(f, 0, BUF_GPA, 1, 0, 0);
	desc(f, 1, BUF_GPA + 0x10, 2, F_NEXT, 2);
	desc(f, 2, BUF_GPA + 0x20, 3, F_WRITE, 0);
	desc(f, 3, BUF_GPA + 0x30, 4, F_WRITE, 0);
	/* Three chains, one idx update. */
	avail_put(f, 3);
	avail_put(f, 1);
	avail_put(f, 0);
	avail_publish(f);
	const uint16_t heads[] = { 3, 1, 0 };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(virtq_pop(&f->q, f->c), 1);
		assert_int_equal(f->c->head, heads[i]);
		assert_int_equal(virtq_push(&f->q, f->c->head, (uint32_t)(100 + i)), 0);
	}
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
	assert_int_equal(used_idx(f), 3);
	for (uint32_t i = 0; i < 3; i++) {
		uint32_t id, len;
		used_elem(f, i, &id, &len);
		assert_int_equal(id, heads[i]);
		assert_int_equal(len, 100 + i);
	}
	/* Completion out of order is fine too. */
	assert_int_equal(virtq_push(&f->q, 2, 0), 0);
	assert_int_equal(used_idx(f), 4);
}

static void test_full_ring(void **state)
{
	struct fx *f = *state;
	/* Exactly size entries outstanding is legal. */
	for (uint16_t i = 0; i < 8; i++) {
		desc(f, i, BUF_GPA + 0x10ULL * i, 4, 0, 0);
		avail_put(f, i);
	}
	avail_publish(f);
	for (uint16_t i = 0; i < 8; i++) {
		assert_int_equal(virtq_pop(&f->q, f->c), 1);
		assert_int_equal(f->c->head, i);
	}
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
}

static void test_wraparound(void **state)
{
	struct fx *f = *state;
	queue_init(f, 4, false, false);
	/* Both free-running indices start just below 65536. */
	f->q.last_avail = 65533;
	f->aidx = 65533;
	avail_set_idx(f, 65533);
	f->q.used_idx = 65534;
	for (uint16_t i = 0; i < 4; i++)
		desc(f, i, BUF_GPA + 0x100ULL * i, 8, F_WRITE, 0);

	uint16_t expect_used = 65534;
	for (int round = 0; round < 3; round++) {
		for (uint16_t i = 0; i < 4; i++)
			avail_put(f, (uint16_t)((i + round) & 3));
		avail_publish(f);
		for (uint16_t i = 0; i < 4; i++) {
			assert_int_equal(virtq_pop(&f->q, f->c), 1);
			assert_int_equal(f->c->head, (i + round) & 3);
			uint32_t slot = expect_used & 3;
			assert_int_equal(virtq_push(&f->q, f->c->head, 1000u + i), 0);
			expect_used++;
			assert_int_equal(used_idx(f), expect_used);
			uint32_t id, len;
			used_elem(f, slot, &id, &len);
			assert_int_equal(id, (i + round) & 3);
			assert_int_equal(len, 1000u + i);
		}
		assert_int_equal(virtq_pop(&f->q, f->c), 0);
	}
	assert_int_equal(f->q.last_avail, (uint16_t)(65533 + 12));
	assert_int_equal(used_idx(f), (uint16_t)(65534 + 12));
}

static void test_read_write(void **state)
{
	struct fx *f = *state;
	/* out: 5 + 7 + 11 bytes, in: 4 + 9 + 6 bytes, scattered. */
	const uint64_t oa[3] = { BUF_GPA + 0x1000, BUF_GPA + 0x3003, BUF_GPA + 0x2007 };
	const uint32_t ol[3] = { 5, 7, 11 };
	const uint64_t ia[3] = { BUF_GPA + 0x5000, BUF_GPA + 0x4001, BUF_GPA + 0x6000 };
	const uint32_t il[3] = { 4, 9, 6 };
	uint8_t flat[23];
	for (int i = 0; i < 23; i++)
		flat[i] = (uint8_t)(0x40 + i);
	uint32_t pos = 0;
	for (int i = 0; i < 3; i++) {
		memcpy(gpa(f, oa[i], ol[i]), flat + pos, ol[i]);
		pos += ol[i];
		memset(gpa(f, ia[i] - 1, il[i] + 2), 0xee, il[i] + 2);
	}
	desc(f, 0, oa[0], ol[0], F_NEXT, 1);
	desc(f, 1, oa[1], ol[1], F_NEXT, 2);
	desc(f, 2, oa[2], ol[2], F_NEXT, 3);
	desc(f, 3, ia[0], il[0], F_NEXT | F_WRITE, 4);
	desc(f, 4, ia[1], il[1], F_NEXT | F_WRITE, 5);
	desc(f, 5, ia[2], il[2], F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->out_len, 23);
	assert_int_equal(f->c->in_len, 19);

	uint8_t buf[64];
	/* Every offset/length combination gathers the right bytes. */
	for (uint64_t off = 0; off <= 25; off++) {
		for (uint64_t len = 0; len <= 25; len++) {
			memset(buf, 0, sizeof(buf));
			uint64_t want = off >= 23 ? 0 : (23 - off < len ? 23 - off : len);
			assert_int_equal(virtq_read(f->c, off, buf, len), want);
			assert_memory_equal(buf, flat + (off < 23 ? off : 0), want);
			assert_int_equal(buf[want], 0);
		}
	}
	/* Reading never reaches into the writable buffers. */
	assert_int_equal(virtq_read(f->c, 23, buf, 10), 0);
	assert_int_equal(virtq_read(f->c, UINT64_MAX, buf, 10), 0);

	/* Scatter 15 bytes starting at offset 2: crosses all three in-iovecs. */
	uint8_t src[19];
	for (int i = 0; i < 19; i++)
		src[i] = (uint8_t)(0xa0 + i);
	assert_int_equal(virtq_write(f->c, 2, src, 15), 15);
	uint8_t got[19];
	pos = 0;
	for (int i = 0; i < 3; i++) {
		const uint8_t *p = gpa(f, ia[i], il[i]);
		assert_int_equal(p[-1], 0xee); /* neighbours untouched */
		assert_int_equal(p[il[i]], 0xee);
		memcpy(got + pos, p, il[i]);
		pos += il[i];
	}
	assert_int_equal(got[0], 0xee);
	assert_int_equal(got[1], 0xee);
	assert_memory_equal(got + 2, src, 15);
	assert_int_equal(got[17], 0xee);
	assert_int_equal(got[18], 0xee);
	/* Longer than the buffers: truncated; past the end: nothing. */
	assert_int_equal(virtq_write(f->c, 0, src, 19), 19);
	assert_int_equal(virtq_write(f->c, 10, src, 19), 9);
	assert_int_equal(virtq_write(f->c, 19, src, 1), 0);
	/* The readable buffers were not written. */
	assert_memory_equal(gpa(f, oa[0], 5), flat, 5);
}

static void test_zero_length(void **state)
{
	struct fx *f = *state;
	/* Zero-length descriptors anywhere, even at addresses outside RAM,
	 * are accepted and contribute no iovec. */
	desc(f, 0, UINT64_MAX, 0, F_NEXT, 1);
	desc(f, 1, BUF_GPA, 10, F_NEXT, 2);
	desc(f, 2, RAM, 0, F_NEXT, 3);
	desc(f, 3, 0x123456789ULL, 0, F_WRITE | F_NEXT, 4);
	desc(f, 4, BUF_GPA + 0x100, 20, F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, 1);
	assert_int_equal(f->c->n_in, 1);
	assert_int_equal(f->c->out_len, 10);
	assert_int_equal(f->c->in_len, 20);
	assert_iov(f, 0, BUF_GPA, 10);
	assert_iov(f, 1, BUF_GPA + 0x100, 20);

	/* A chain made only of zero-length descriptors is an empty buffer. */
	desc(f, 5, UINT64_MAX - 5, 0, F_WRITE, 0);
	avail_add(f, 5);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->head, 5);
	assert_int_equal(f->c->n_out + f->c->n_in, 0);
	assert_int_equal(virtq_push(&f->q, 5, 0), 0);

	/* But they still obey the ordering rule... */
	desc(f, 6, BUF_GPA, 0, F_WRITE | F_NEXT, 7);
	desc(f, 7, BUF_GPA, 0, 0, 0);
	expect_eio(f, 6);
}

static void test_zero_length_counts_toward_loops(void **state)
{
	struct fx *f = *state;
	/* ...and a loop of zero-length descriptors is still a loop. */
	desc(f, 0, 0, 0, F_NEXT, 1);
	desc(f, 1, 0, 0, F_NEXT, 0);
	expect_eio(f, 0);
}

static void test_notify_flags(void **state)
{
	struct fx *f = *state;
	desc(f, 0, BUF_GPA, 4, F_WRITE, 0);
	/* Nothing pushed since activation: flags 0 still wants the first. */
	assert_int_equal(virtq_push(&f->q, 0, 4), 0);
	assert_true(virtq_should_notify(&f->q));
	/* Nothing new since the last call. */
	assert_false(virtq_should_notify(&f->q));
	/* VRING_AVAIL_F_NO_INTERRUPT is honoured without EVENT_IDX. */
	avail_flags(f, 1);
	assert_int_equal(virtq_push(&f->q, 0, 4), 0);
	assert_false(virtq_should_notify(&f->q));
	avail_flags(f, 0);
	assert_int_equal(virtq_push(&f->q, 0, 4), 0);
	assert_int_equal(virtq_push(&f->q, 0, 4), 0);
	assert_true(virtq_should_notify(&f->q));
	/* used_event is ignored without EVENT_IDX. */
	used_event(f, 1000);
	assert_int_equal(virtq_push(&f->q, 0, 4), 0);
	assert_true(virtq_should_notify(&f->q));
}

static void test_notify_event_idx(void **state)
{
	struct fx *f = *state;
	queue_init(f, 8, false, true);
	/* First call after activation always notifies. */
	used_event(f, 100);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* used idx 1 */
	assert_true(virtq_should_notify(&f->q));

	used_event(f, 2); /* wants an interrupt when used idx passes 2 */
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 2: old 1, event 2 */
	assert_false(virtq_should_notify(&f->q));
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 3: entry 2 written */
	assert_true(virtq_should_notify(&f->q));
	assert_int_equal(virtq_push(&f->q, 0, 0), 0);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 5: already past 2 */
	assert_false(virtq_should_notify(&f->q));

	/* A batch crossing used_event notifies once. */
	used_event(f, 6);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 8: [5, 8) holds 6 */
	assert_true(virtq_should_notify(&f->q));
	assert_false(virtq_should_notify(&f->q)); /* nothing new */

	/* NO_INTERRUPT is ignored with EVENT_IDX. */
	avail_flags(f, 1);
	used_event(f, 8);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0);
	assert_true(virtq_should_notify(&f->q));
	avail_flags(f, 0);

	/* Across the 16-bit wrap. */
	f->q.used_idx = 65534;
	f->q.signalled_used = 65534;
	used_event(f, 65535);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 65535 */
	assert_false(virtq_should_notify(&f->q));
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 0 */
	assert_true(virtq_should_notify(&f->q));
	used_event(f, 0);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0); /* 1 */
	assert_true(virtq_should_notify(&f->q));
	assert_int_equal(used_idx(f), 1);
}

static void test_avail_event(void **state)
{
	struct fx *f = *state;
	/* Without EVENT_IDX the field is left alone. */
	put16(f, f->q.used_gpa + 4 + 8ULL * 8, 0xabcd);
	virtq_set_avail_event(&f->q);
	assert_int_equal(avail_event(f), 0xabcd);

	queue_init(f, 8, false, true);
	virtq_set_avail_event(&f->q);
	assert_int_equal(avail_event(f), 0);
	desc(f, 0, BUF_GPA, 4, 0, 0);
	avail_add(f, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(virtq_pop(&f->q, f->c), 0);
	virtq_set_avail_event(&f->q);
	assert_int_equal(avail_event(f), 2);
	/* The used ring entries were not disturbed by it. */
	assert_int_equal(used_idx(f), 0);
}

/* ---- virtq_pop_or_enable_notify */

static void test_pop_or_notify_chain(void **state)
{
	struct fx *f = *state;
	queue_init(f, 8, false, true);
	put16(f, f->q.used_gpa + 4 + 8ULL * 8, 0xabcd);
	desc(f, 3, BUF_GPA, 20, F_WRITE, 0);
	avail_add(f, 3);
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), 1);
	assert_int_equal(f->c->head, 3);
	assert_int_equal(f->c->in_len, 20);
	assert_int_equal(f->q.last_avail, 1);
	/* A chain was there: no notification asked for. */
	assert_int_equal(avail_event(f), 0xabcd);
}

static void test_pop_or_notify_empty(void **state)
{
	struct fx *f = *state;
	/* Without EVENT_IDX: empty, avail_event left alone. */
	put16(f, f->q.used_gpa + 4 + 8ULL * 8, 0xabcd);
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), 0);
	assert_int_equal(avail_event(f), 0xabcd);

	/* With EVENT_IDX: avail_event names the next entry to come. */
	queue_init(f, 8, false, true);
	put16(f, f->q.used_gpa + 4 + 8ULL * 8, 0xabcd);
	desc(f, 0, BUF_GPA, 4, 0, 0);
	avail_add(f, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), 1);
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), 1);
	assert_int_equal(avail_event(f), 0xabcd);
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), 0);
	assert_int_equal(avail_event(f), 2);
	assert_int_equal(f->q.last_avail, 2);
	assert_int_equal(used_idx(f), 0);
}

/*
 * The race the second look closes: the driver publishes a chain after the
 * device found the ring empty but before the device's new avail_event is
 * visible to it, so it does not notify. To put the driver's store exactly
 * there, the used ring's page is made read-only: the avail_event store
 * faults, the SIGSEGV handler publishes the prepared chain and makes the
 * page writable again, and the store is retried.
 */
static struct fx *race_fx;
static uint8_t *race_page;
static volatile sig_atomic_t race_fired;

static void race_segv(int sig, siginfo_t *si, void *ctx)
{
	uint8_t *a = si->si_addr;
	if (!race_page || a < race_page || a >= race_page + GM_PAGE) {
		signal(SIGSEGV, SIG_DFL); /* a real crash: let it happen */
		return;
	}
	avail_publish(race_fx);
	mprotect(race_page, GM_PAGE, PROT_READ | PROT_WRITE);
	race_page = NULL;
	race_fired = 1;
}

static void test_pop_or_notify_race(void **state)
{
	struct fx *f = *state;
	queue_init(f, 8, false, true);
	desc(f, 6, BUF_GPA, 8, 0, 0);
	avail_put(f, 6); /* written, not yet published */

	struct sigaction sa = { .sa_sigaction = race_segv, .sa_flags = SA_SIGINFO }, old;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGSEGV, &sa, &old), 0);
	race_fx = f;
	race_fired = 0;
	race_page = f->mem.host + (f->q.used_gpa & ~(uint64_t)(GM_PAGE - 1));
	assert_int_equal(mprotect(race_page, GM_PAGE, PROT_READ), 0);

	int r = virtq_pop_or_enable_notify(&f->q, f->c);
	uint8_t *still_armed = race_page;
	if (still_armed)
		mprotect(still_armed, GM_PAGE, PROT_READ | PROT_WRITE);
	race_page = NULL;
	assert_int_equal(sigaction(SIGSEGV, &old, NULL), 0);

	assert_null(still_armed);
	assert_true(race_fired);
	assert_int_equal(r, 1);
	assert_int_equal(f->c->head, 6);
	assert_int_equal(f->q.last_avail, 1);
	assert_int_equal(avail_event(f), 0); /* armed for the entry it then took */
}

static void test_pop_or_notify_malformed(void **state)
{
	struct fx *f = *state;
	queue_init(f, 8, false, true);
	avail_add(f, 8); /* head outside the table */
	assert_int_equal(virtq_pop_or_enable_notify(&f->q, f->c), -EIO);
	assert_int_equal(f->q.last_avail, 0);
}

static void test_activate(void **state)
{
	struct fx *f = *state;
	struct virtq q;
	const uint16_t good_sizes[] = { 1, 2, 4, 256, VIRTQ_MAX_SIZE };
	for (size_t i = 0; i < sizeof(good_sizes) / sizeof(good_sizes[0]); i++) {
		memset(&q, 0, sizeof(q));
		q.mem = &f->mem;
		q.size = good_sizes[i];
		q.desc_gpa = DESC_GPA;
		q.avail_gpa = AVAIL_GPA;
		q.used_gpa = USED_GPA;
		q.last_avail = 77;
		q.used_idx = 88;
		q.signalled_used_valid = true;
		assert_int_equal(virtq_activate(&q), 0);
		assert_int_equal(q.last_avail, 0);
		assert_int_equal(q.used_idx, 0);
		assert_false(q.signalled_used_valid);
	}
	const uint16_t bad_sizes[] = { 0, 3, 6, 12, 1000, 1025, 2048, 32768, 65535 };
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		memset(&q, 0, sizeof(q));
		q.mem = &f->mem;
		q.size = bad_sizes[i];
		q.desc_gpa = DESC_GPA;
		q.avail_gpa = AVAIL_GPA;
		q.used_gpa = USED_GPA;
		assert_int_equal(virtq_activate(&q), -EINVAL);
	}

	struct {
		uint64_t d, a, u;
	} const bad[] = {
		{ DESC_GPA + 8, AVAIL_GPA, USED_GPA },  /* desc not 16-aligned */
		{ DESC_GPA + 1, AVAIL_GPA, USED_GPA },
		{ DESC_GPA, AVAIL_GPA + 1, USED_GPA },  /* avail not 2-aligned */
		{ DESC_GPA, AVAIL_GPA, USED_GPA + 2 },  /* used not 4-aligned */
		{ DESC_GPA, AVAIL_GPA, USED_GPA + 1 },
		{ RAM - 16 * 8 + 16, AVAIL_GPA, USED_GPA }, /* desc runs past RAM */
		{ RAM, AVAIL_GPA, USED_GPA },
		{ DESC_GPA, RAM - (6 + 2 * 8) + 2, USED_GPA }, /* avail past RAM */
		{ DESC_GPA, AVAIL_GPA, RAM - (6 + 8 * 8) + 2 }, /* used past RAM */
		{ DESC_GPA, AVAIL_GPA, RAM - 8 }, /* used element would be past RAM */
		{ UINT64_MAX - 15, AVAIL_GPA, USED_GPA }, /* wraps around */
		{ DESC_GPA, UINT64_MAX - 1, USED_GPA },
		{ DESC_GPA, AVAIL_GPA, UINT64_MAX - 3 },
		{ DESC_GPA, AVAIL_GPA, 3 * GIB }, /* far past RAM */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&q, 0, sizeof(q));
		q.mem = &f->mem;
		q.size = 8;
		q.desc_gpa = bad[i].d;
		q.avail_gpa = bad[i].a;
		q.used_gpa = bad[i].u;
		assert_int_equal(virtq_activate(&q), -EINVAL);
	}
	/* Each area as close to the end of RAM as its alignment allows is
	 * fine (the used ring's 70 bytes end 2 bytes short of it). */
	for (int i = 0; i < 3; i++) {
		memset(&q, 0, sizeof(q));
		q.mem = &f->mem;
		q.size = 8;
		q.desc_gpa = i == 0 ? RAM - 16 * 8 : DESC_GPA;
		q.avail_gpa = i == 1 ? RAM - (6 + 2 * 8) : AVAIL_GPA;
		q.used_gpa = i == 2 ? RAM - (6 + 8 * 8) - 2 : USED_GPA;
		assert_int_equal(virtq_activate(&q), 0);
	}
	/* No guest memory at all. */
	memset(&q, 0, sizeof(q));
	q.size = 8;
	assert_int_equal(virtq_activate(&q), -EINVAL);
}

static void test_push_at_end_of_ram(void **state)
{
	struct fx *f = *state;
	/* Used ring (with avail_event) as close to the end of RAM as its
	 * 4-byte alignment allows: the last slot's element and avail_event
	 * are the last bytes written. */
	memset(&f->q, 0, sizeof(f->q));
	f->q.mem = &f->mem;
	f->q.size = 8;
	f->q.desc_gpa = DESC_GPA;
	f->q.avail_gpa = AVAIL_GPA;
	f->q.used_gpa = RAM - (6 + 8 * 8) - 2; /* 4-aligned */
	f->q.event_idx = true;
	assert_int_equal(f->q.used_gpa & 3, 0);
	assert_int_equal(virtq_activate(&f->q), 0);
	f->q.used_idx = 7;
	assert_int_equal(virtq_push(&f->q, 7, 0x11223344), 0);
	uint32_t id, len;
	used_elem(f, 7, &id, &len);
	assert_int_equal(id, 7);
	assert_int_equal(len, 0x11223344);
	assert_int_equal(used_idx(f), 8);
	virtq_set_avail_event(&f->q);

	/* The transport (or a bug) moving the ring after activation: push
	 * re-checks and refuses rather than writing outside RAM. */
	f->q.used_gpa = RAM - 8;
	assert_int_equal(virtq_push(&f->q, 0, 0), -EIO);
	f->q.used_gpa = UINT64_MAX - 3;
	assert_int_equal(virtq_push(&f->q, 0, 0), -EIO);
	virtq_set_avail_event(&f->q); /* no-op, no crash */
	/* A head the device never got from the ring. */
	f->q.used_gpa = USED_GPA;
	assert_int_equal(virtq_push(&f->q, 8, 0), -EIO);
	assert_int_equal(virtq_push(&f->q, 0xffff, 0), -EIO);
	assert_int_equal(virtq_push(&f->q, 0, 0), 0);
}

/* ---- malformed rings: every one is -EIO */

static void test_bad_addr_past_ram(void **state)
{
	struct fx *f = *state;
	desc(f, 0, RAM, 1, 0, 0);
	expect_eio(f, 0);
	desc(f, 0, RAM - 4, 8, 0, 0); /* straddles the end */
	expect_eio(f, 0);
	desc(f, 0, 3 * GIB, 4096, 0, 0);
	expect_eio(f, 0);
	desc(f, 0, MEM_HIGH_BASE, 16, F_WRITE, 0);
	expect_eio(f, 0);
	/* Second descriptor of a chain bad, first fine. */
	desc(f, 0, BUF_GPA, 16, F_NEXT, 1);
	desc(f, 1, RAM - 1, 2, F_WRITE, 0);
	expect_eio(f, 0);
}

static void test_bad_addr_overflow(void **state)
{
	struct fx *f = *state;
	desc(f, 0, UINT64_MAX - 10, 100, 0, 0);
	expect_eio(f, 0);
	desc(f, 0, UINT64_MAX, 1, 0, 0);
	expect_eio(f, 0);
	desc(f, 0, 0xfffffffffffff000ULL, 0x2000, F_WRITE, 0);
	expect_eio(f, 0);
	desc(f, 0, BUF_GPA, UINT32_MAX, 0, 0);
	expect_eio(f, 0);
}

static void test_bad_head(void **state)
{
	struct fx *f = *state;
	expect_eio(f, 8);
	queue_init(f, 8, true, false);
	expect_eio(f, 0xffff);
}

static void test_bad_next(void **state)
{
	struct fx *f = *state;
	desc(f, 0, BUF_GPA, 16, F_NEXT, 8);
	expect_eio(f, 0);
	queue_init(f, 8, true, false);
	desc(f, 0, BUF_GPA, 16, F_NEXT, 0xffff);
	expect_eio(f, 0);
}

static void test_cycle(void **state)
{
	struct fx *f = *state;
	desc(f, 2, BUF_GPA, 16, F_NEXT, 5);
	desc(f, 5, BUF_GPA, 16, F_NEXT, 2);
	expect_eio(f, 2);
}

static void test_self_loop(void **state)
{
	struct fx *f = *state;
	desc(f, 4, BUF_GPA, 16, F_WRITE | F_NEXT, 4);
	expect_eio(f, 4);
}

static void test_chain_longer_than_queue(void **state)
{
	struct fx *f = *state;
	/* Through all 8 descriptors and back to the head: 9 > size. */
	for (uint16_t i = 0; i < 8; i++)
		desc(f, i, BUF_GPA, 1, F_NEXT, (uint16_t)((i + 1) & 7));
	expect_eio(f, 0);
	/* A loop that does not include the head (a "lasso"). */
	queue_init(f, 8, true, false);
	desc(f, 0, BUF_GPA, 1, F_NEXT, 1);
	desc(f, 1, BUF_GPA, 1, F_NEXT, 2);
	desc(f, 2, BUF_GPA, 1, F_NEXT, 1);
	expect_eio(f, 0);
}

static void test_indirect_not_negotiated(void **state)
{
	struct fx *f = *state;
	queue_init(f, 8, false, false);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, 0, 0);
	desc(f, 0, IND_GPA, 16, F_INDIRECT, 0);
	expect_eio(f, 0);
}

static void test_indirect_nested(void **state)
{
	struct fx *f = *state;
	desc_at(f, IND2_GPA, 0, BUF_GPA, 16, 0, 0);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, IND2_GPA, 16, F_INDIRECT, 0);
	desc(f, 0, IND_GPA, 32, F_INDIRECT, 0);
	expect_eio(f, 0);
	/* The table pointing at itself. */
	desc_at(f, IND_GPA, 0, IND_GPA, 16, F_INDIRECT, 0);
	desc(f, 1, IND_GPA, 16, F_INDIRECT, 0);
	expect_eio(f, 1);
}

static void test_indirect_bad_table(void **state)
{
	struct fx *f = *state;
	for (uint32_t i = 0; i < VIRTQ_MAX_SIZE + 1; i++)
		desc_at(f, IND_GPA, i, BUF_GPA, 1, 0, 0);
	const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
		{ IND_GPA, 0 },                           /* empty */
		{ IND_GPA, 15 },                          /* not a multiple of 16 */
		{ IND_GPA, 24 },
		{ IND_GPA, 16 * 3 + 1 },
		{ IND_GPA, 16 * (VIRTQ_MAX_SIZE + 1) },   /* too many entries */
		{ IND_GPA, 0xfffffff0u },
		{ RAM, 16 },                              /* outside RAM */
		{ RAM - 16, 32 },                         /* straddles the end */
		{ UINT64_MAX - 15, 32 },                  /* wraps */
		{ 3 * GIB, 16 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		desc(f, 3, bad[i].addr, bad[i].len, F_INDIRECT, 0);
		expect_eio(f, 3);
	}
	/* The largest allowed table, chained end to end, is fine. */
	queue_init(f, 8, true, false);
	for (uint32_t i = 0; i < VIRTQ_MAX_SIZE; i++)
		desc_at(f, IND_GPA, i, BUF_GPA + i, 1, i + 1 < VIRTQ_MAX_SIZE ? F_NEXT : 0,
			(uint16_t)(i + 1));
	desc(f, 3, IND_GPA, 16 * VIRTQ_MAX_SIZE, F_INDIRECT, 0);
	avail_add(f, 3);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, VIRTQ_MAX_SIZE);
	assert_int_equal(f->c->out_len, VIRTQ_MAX_SIZE);
}

static void test_indirect_with_next(void **state)
{
	struct fx *f = *state;
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, 0, 0);
	desc(f, 0, IND_GPA, 16, F_INDIRECT | F_NEXT, 1);
	desc(f, 1, BUF_GPA, 16, F_WRITE, 0);
	expect_eio(f, 0);
}

static void test_indirect_bad_chain(void **state)
{
	struct fx *f = *state;
	/* next beyond the table (but inside the queue size). */
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_NEXT, 2);
	desc_at(f, IND_GPA, 1, BUF_GPA, 16, 0, 0);
	desc(f, 0, IND_GPA, 32, F_INDIRECT, 0);
	expect_eio(f, 0);
	/* Cycle and self-loop inside the table. */
	queue_init(f, 8, true, false);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, BUF_GPA, 16, F_NEXT, 0);
	desc(f, 0, IND_GPA, 32, F_INDIRECT, 0);
	expect_eio(f, 0);
	queue_init(f, 8, true, false);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_NEXT, 0);
	desc(f, 0, IND_GPA, 16, F_INDIRECT, 0);
	expect_eio(f, 0);
	/* A buffer inside the table outside RAM. */
	queue_init(f, 8, true, false);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, UINT64_MAX - 7, 16, F_WRITE, 0);
	desc(f, 0, IND_GPA, 32, F_INDIRECT, 0);
	expect_eio(f, 0);
}

static void test_readable_after_writable(void **state)
{
	struct fx *f = *state;
	desc(f, 0, BUF_GPA, 16, F_NEXT, 1);
	desc(f, 1, BUF_GPA, 16, F_WRITE | F_NEXT, 2);
	desc(f, 2, BUF_GPA, 16, 0, 0);
	expect_eio(f, 0);
	/* Inside an indirect table. */
	queue_init(f, 8, true, false);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, F_WRITE | F_NEXT, 1);
	desc_at(f, IND_GPA, 1, BUF_GPA, 16, 0, 0);
	desc(f, 0, IND_GPA, 32, F_INDIRECT, 0);
	expect_eio(f, 0);
	/* Writable direct descriptor, then a table starting readable. */
	queue_init(f, 8, true, false);
	desc(f, 0, BUF_GPA, 16, F_WRITE | F_NEXT, 1);
	desc(f, 1, IND_GPA, 16, F_INDIRECT, 0);
	desc_at(f, IND_GPA, 0, BUF_GPA, 16, 0, 0);
	expect_eio(f, 0);
}

static void test_avail_idx_jump(void **state)
{
	struct fx *f = *state;
	for (uint16_t i = 0; i < 8; i++)
		desc(f, i, BUF_GPA, 16, 0, 0);
	/* size + 1 ahead. */
	avail_set_idx(f, 9);
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
	assert_int_equal(f->q.last_avail, 0);
	/* "Behind" us, i.e. 65535 ahead. */
	avail_set_idx(f, 0xffff);
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
	avail_set_idx(f, 0x8000);
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
	/* Same after wrapping. */
	f->q.last_avail = 65530;
	avail_set_idx(f, (uint16_t)(65530 + 9));
	assert_int_equal(virtq_pop(&f->q, f->c), -EIO);
	avail_set_idx(f, (uint16_t)(65530 + 8));
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
}

static void test_total_length_overflow(void **state)
{
	/* Needs buffers bigger than 16 MiB: a 3 GiB + 64 MiB guest whose RAM is
	 * never touched beyond the rings (MAP_NORESERVE memfd). */
	struct fx *f = *state;
	struct guest_mem big;
	assert_int_equal(arch_ram_init(&big, 3 * GIB + 64 * MIB), 0);
	struct guest_mem small = f->mem;
	f->mem = big;
	queue_init(f, 8, true, false);

	/* 3 GiB + 3 GiB > UINT32_MAX. */
	desc(f, 0, 0, 0xc0000000u, F_NEXT, 1);
	desc(f, 1, 0, 0xc0000000u, F_WRITE, 0);
	expect_eio(f, 0);
	/* Exactly UINT32_MAX is accepted, one more byte is not. */
	queue_init(f, 8, true, false);
	desc(f, 0, 0, 0xc0000000u, F_NEXT, 1);
	desc(f, 1, 0x1000, 0x3fffffffu, F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->out_len, 0xc0000000u);
	assert_int_equal(f->c->out_len + f->c->in_len, UINT32_MAX);
	assert_ptr_equal(f->c->iov[1].iov_base, big.host + 0x1000);
	desc(f, 1, 0x1000, 0x40000000u, F_WRITE, 0);
	expect_eio(f, 0);
	/* Several large descriptors, through an indirect table. */
	queue_init(f, 8, true, false);
	for (uint32_t i = 0; i < 6; i++)
		desc_at(f, IND_GPA, i, 0x1000, 0xa0000000u, i < 5 ? F_NEXT : 0,
			(uint16_t)(i + 1));
	desc(f, 0, IND_GPA, 6 * 16, F_INDIRECT, 0);
	expect_eio(f, 0);
	/* The RAM hole between 3 GiB and 4 GiB is not RAM. */
	queue_init(f, 8, true, false);
	desc(f, 0, 3 * GIB - 8, 16, 0, 0);
	expect_eio(f, 0);

	f->mem = small;
	gm_release(&big);
	queue_init(f, 8, true, false);
}

static void test_too_many_iovecs(void **state)
{
	struct fx *f = *state;
	/* Largest queue: 1023 direct descriptors then an indirect table. The
	 * chain is legal per descriptor table, but more than VIRTQ_MAX_SIZE
	 * buffers do not fit the iovec array. */
	queue_init(f, VIRTQ_MAX_SIZE, true, false);
	for (uint32_t i = 0; i < VIRTQ_MAX_SIZE - 1; i++)
		desc(f, (uint16_t)i, BUF_GPA + i, 1, F_NEXT, (uint16_t)(i + 1));
	desc(f, VIRTQ_MAX_SIZE - 1, IND_GPA, 32, F_INDIRECT, 0);
	desc_at(f, IND_GPA, 0, BUF_GPA, 1, F_NEXT, 1);
	desc_at(f, IND_GPA, 1, BUF_GPA, 1, 0, 0);
	expect_eio(f, 0);
	/* With a one-entry table it is exactly VIRTQ_MAX_SIZE iovecs. */
	queue_init(f, VIRTQ_MAX_SIZE, true, false);
	for (uint32_t i = 0; i < VIRTQ_MAX_SIZE - 1; i++)
		desc(f, (uint16_t)i, BUF_GPA + i, 1, F_NEXT, (uint16_t)(i + 1));
	desc(f, VIRTQ_MAX_SIZE - 1, IND_GPA, 16, F_INDIRECT, 0);
	desc_at(f, IND_GPA, 0, BUF_GPA, 1, F_WRITE, 0);
	avail_add(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->c), 1);
	assert_int_equal(f->c->n_out, VIRTQ_MAX_SIZE - 1);
	assert_int_equal(f->c->n_in, 1);
	assert_int_equal(virtq_write(f->c, 0, "x", 1), 1);
	assert_int_equal(f->mem.host[BUF_GPA], 'x');
}

static void test_unusable_queue(void **state)
{
	struct fx *f = *state;
	/* A queue struct that was never activated properly. */
	struct virtq q = f->q;
	q.size = 0;
	assert_int_equal(virtq_pop(&q, f->c), -EIO);
	assert_int_equal(virtq_push(&q, 0, 0), -EIO);
	q = f->q;
	q.size = 3;
	assert_int_equal(virtq_pop(&q, f->c), -EIO);
	q = f->q;
	q.avail_gpa = RAM - 4;
	assert_int_equal(virtq_pop(&q, f->c), -EIO);
	assert_true(virtq_should_notify(&q));
	q = f->q;
	q.desc_gpa = RAM - 16;
	assert_int_equal(virtq_pop(&q, f->c), -EIO);
	q = f->q;
	q.mem = NULL;
	assert_int_equal(virtq_pop(&q, f->c), -EIO);
	assert_int_equal(virtq_push(&q, 0, 0), -EIO);
	virtq_set_avail_event(&q);
}

/* ---- random rings */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd();
		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

#define FUZZ_IND_ENTRIES 64

/* Random descriptor, sometimes pushed toward plausible values so the walk
 * gets past the first check. */
static void fuzz_desc(uint8_t *p, uint32_t table_entries)
{
	fill_random(p, 16);
	uint64_t r = rnd();
	if ((r & 7) == 0)
		return; /* pure garbage */
	uint64_t addr;
	uint32_t len;
	switch ((r >> 3) % 8) {
	case 0: addr = BUF_GPA + rnd() % 0x10000; len = (uint32_t)(rnd() % 0x2000); break;
	case 1: addr = rnd() % (RAM + 0x1000); len = (uint32_t)(rnd() % 0x10000); break;
	case 2: addr = RAM - rnd() % 64; len = (uint32_t)(rnd() % 128); break;
	case 3: addr = IND_GPA + 16 * (rnd() % 8);
		len = (uint32_t)(16 * (rnd() % (FUZZ_IND_ENTRIES + 2))); break;
	case 4: addr = UINT64_MAX - rnd() % 0x100; len = (uint32_t)(rnd() % 0x1000); break;
	default: addr = BUF_GPA; len = (uint32_t)(rnd() % 4); break;
	}
	uint16_t flags = (uint16_t)((r >> 8) & (F_NEXT | F_WRITE));
	if ((r >> 12) % 4 == 0)
		flags |= F_INDIRECT;
	uint16_t next = (uint16_t)(rnd() % (table_entries + 2));
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

static void test_random_rings(void **state)
{
	struct fx *f = *state;
	const uint16_t sizes[] = { 1, 2, 4, 8, 16 };
	const uint8_t *lo = f->mem.host, *hi = f->mem.host + f->mem.size;
	unsigned pops = 0, eios = 0;

	for (int iter = 0; iter < 20000; iter++) {
		uint16_t size = sizes[rnd() % 5];
		f->q.size = size;
		f->q.indirect = rnd() & 1;
		f->q.event_idx = rnd() & 1;
		assert_int_equal(virtq_activate(&f->q), 0);
		uint8_t *table = gpa(f, DESC_GPA, 16ULL * size);
		uint8_t *avail = gpa(f, AVAIL_GPA, 6 + 2ULL * size);
		uint8_t *ind = gpa(f, IND_GPA, 16 * (FUZZ_IND_ENTRIES + 8));
		uint8_t *used = gpa(f, USED_GPA, 6 + 8ULL * size);
		for (uint32_t i = 0; i < size; i++)
			fuzz_desc(table + 16 * i, size);
		for (uint32_t i = 0; i < FUZZ_IND_ENTRIES + 8; i++)
			fuzz_desc(ind + 16 * i, FUZZ_IND_ENTRIES);
		fill_random(avail, 6 + 2ULL * size);
		fill_random(used, 6 + 8ULL * size);
		if (rnd() % 4) { /* plausible ring heads */
			for (uint32_t i = 0; i < size; i++) {
				uint16_t h = (uint16_t)(rnd() % (size + 1u));
				memcpy(avail + 4 + 2 * i, &h, 2);
			}
		}
		f->q.last_avail = (uint16_t)rnd();
		f->q.used_idx = (uint16_t)rnd();
		if (rnd() % 4) { /* plausible avail->idx */
			uint16_t idx = (uint16_t)(f->q.last_avail + rnd() % (size + 2u));
			memcpy(avail + 2, &idx, 2);
		}

		int r;
		unsigned n = 0;
		while ((r = virtq_pop(&f->q, f->c)) > 0) {
			assert_int_equal(r, 1);
			assert_true(++n <= size);
			pops++;
			const struct virtq_chain *c = f->c;
			assert_true(c->head < size);
			assert_true(c->n_out + c->n_in <= VIRTQ_MAX_SIZE);
			assert_true(c->out_len + c->in_len <= UINT32_MAX);
			uint64_t out = 0, in = 0;
			for (uint32_t i = 0; i < c->n_out + c->n_in; i++) {
				const uint8_t *b = c->iov[i].iov_base;
				uint64_t l = c->iov[i].iov_len;
				assert_true(l > 0);
				assert_true(b >= lo && b <= hi && l <= (uint64_t)(hi - b));
				if (i < c->n_out)
					out += l;
				else
					in += l;
			}
			assert_int_equal(out, c->out_len);
			assert_int_equal(in, c->in_len);
			/* Read what the device would read. (No writes: they
			 * could land on the rings and keep the batch going.) */
			uint8_t tmp[64];
			virtq_read(c, rnd() % 64, tmp, sizeof(tmp));
			assert_int_equal(virtq_push(&f->q, c->head, (uint32_t)rnd()), 0);
		}
		assert_true(r == 0 || r == -EIO);
		if (r < 0)
			eios++;
		virtq_should_notify(&f->q);
		virtq_set_avail_event(&f->q);
	}
	print_message("random rings: %u chains popped, %u rejected\n", pops, eios);
	/* The generator reaches both outcomes. */
	assert_true(pops > 1000);
	assert_true(eios > 1000);
	queue_init(f, 8, true, false);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_empty),
		T(test_single_buffer),
		T(test_chain_out_in),
		T(test_chain_whole_table),
		T(test_writable_only),
		T(test_indirect),
		T(test_indirect_unaligned_and_large),
		T(test_direct_then_indirect),
		T(test_batch),
		T(test_full_ring),
		T(test_wraparound),
		T(test_read_write),
		T(test_zero_length),
		T(test_zero_length_counts_toward_loops),
		T(test_notify_flags),
		T(test_notify_event_idx),
		T(test_avail_event),
		T(test_pop_or_notify_chain),
		T(test_pop_or_notify_empty),
		T(test_pop_or_notify_race),
		T(test_pop_or_notify_malformed),
		T(test_activate),
		T(test_push_at_end_of_ram),
		T(test_bad_addr_past_ram),
		T(test_bad_addr_overflow),
		T(test_bad_head),
		T(test_bad_next),
		T(test_cycle),
		T(test_self_loop),
		T(test_chain_longer_than_queue),
		T(test_indirect_not_negotiated),
		T(test_indirect_nested),
		T(test_indirect_bad_table),
		T(test_indirect_with_next),
		T(test_indirect_bad_chain),
		T(test_readable_after_writable),
		T(test_avail_idx_jump),
		T(test_total_length_overflow),
		T(test_too_many_iovecs),
		T(test_unusable_queue),
		T(test_random_rings),
	};
	return cmocka_run_group_tests_name("virtq", tests, NULL, NULL);
}
