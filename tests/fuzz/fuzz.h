/*
 * Helpers shared by the libFuzzer targets (tests/fuzz/): a fake guest RAM
 * and a fake virtio driver that turns fuzzer bytes into descriptor chains.
 *
 * Chain input format (fz_chain): one byte n (1 + n % FZ_MAX_SEGS segments),
 * then per segment a little-endian u16 length and a flags byte (bit 0: the
 * device writes it), then the bytes the device reads, filling the readable
 * segments in order (missing bytes read as zero). Everything the guest
 * could write is covered: types, lengths, segment splits, order.
 */
#ifndef MICROVM_FUZZ_H
#define MICROVM_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "memory.h"
#include "virtio/queue.h"

#define FZ_RAM (4 * MIB)
#define FZ_QSZ 64
#define FZ_MAX_SEGS 8
#define FZ_HEAP 0x100000ULL /* segment buffers from here */

struct fz_queue {
	struct virtq q;
	uint64_t desc, avail, used;
	uint16_t avail_idx;
	uint16_t next_desc;
};

/* Abort on setup failures: they are bugs of the harness, not findings. */
static inline void fz_check(bool ok)
{
	if (!ok)
		abort();
}

static inline void fz_ram(struct guest_mem *m, uint64_t size)
{
	fz_check(arch_ram_init(m, size) == 0);
}

/* Queue @i's rings at a fixed place per queue below FZ_HEAP. */
static inline void fz_queue_init(struct fz_queue *fq, struct guest_mem *m, unsigned i)
{
	memset(fq, 0, sizeof(*fq));
	fq->desc = 0x10000ULL + 0x8000ULL * i;
	fq->avail = fq->desc + 0x2000;
	fq->used = fq->desc + 0x4000;
	fq->q.mem = m;
	fq->q.size = FZ_QSZ;
	fq->q.desc_gpa = fq->desc;
	fq->q.avail_gpa = fq->avail;
	fq->q.used_gpa = fq->used;
	fz_check(virtq_activate(&fq->q) == 0);
	fq->q.ready = true;
}

/* Reset the rings and the device-side indices for the next input. */
static inline void fz_queue_reset(struct fz_queue *fq)
{
	memset(gm_ptr(fq->q.mem, fq->desc, 0x6000), 0, 0x6000);
	fz_check(virtq_activate(&fq->q) == 0);
	fq->q.ready = true;
	fq->avail_idx = fq->next_desc = 0;
}

/* Put one descriptor chain on the available ring. */
static inline void fz_add_chain(struct fz_queue *fq, const uint64_t *gpa, const uint32_t *len,
				const bool *wr, unsigned n)
{
	struct guest_mem *m = fq->q.mem;
	uint16_t head = fq->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % FZ_QSZ);
		uint8_t *d = gm_ptr(m, fq->desc + 16ULL * idx, 16);
		uint16_t flags = (uint16_t)((wr[i] ? 2 : 0) | (i + 1 < n ? 1 : 0));
		uint16_t next = (uint16_t)((idx + 1) % FZ_QSZ);
		memcpy(d, &gpa[i], 8);
		memcpy(d + 8, &len[i], 4);
		memcpy(d + 12, &flags, 2);
		memcpy(d + 14, &next, 2);
	}
	fq->next_desc = (uint16_t)((head + n) % FZ_QSZ);
	uint16_t *ring = gm_ptr(m, fq->avail + 4 + 2ULL * (fq->avail_idx % FZ_QSZ), 2);
	*ring = head;
	fq->avail_idx++;
	memcpy(gm_ptr(m, fq->avail + 2, 2), &fq->avail_idx, 2);
}

/*
 * Build one chain from @data (format above) at guest address *@heap
 * (advanced). Returns the bytes of @data used, 0 if none are left or the
 * queue is full.
 */
static inline size_t fz_chain(struct fz_queue *fq, uint64_t *heap, const uint8_t *data,
			      size_t size)
{
	if (size < 1 || fq->avail_idx >= FZ_QSZ / FZ_MAX_SEGS)
		return 0;
	unsigned n = 1 + data[0] % FZ_MAX_SEGS;
	size_t at = 1;
	uint64_t gpa[FZ_MAX_SEGS];
	uint32_t len[FZ_MAX_SEGS];
	bool wr[FZ_MAX_SEGS];
	for (unsigned i = 0; i < n; i++) {
		uint8_t b[3] = { 0, 0, 0 };
		for (unsigned k = 0; k < 3 && at < size; k++)
			b[k] = data[at++];
		len[i] = (uint32_t)(b[0] | b[1] << 8);
		wr[i] = b[2] & 1;
		gpa[i] = *heap;
		*heap = (*heap + len[i] + 15) & ~15ULL;
		if (*heap + 16 >= FZ_RAM)
			return 0;
	}
	for (unsigned i = 0; i < n; i++) {
		uint8_t *p = gm_ptr(fq->q.mem, gpa[i], len[i]);
		memset(p, 0, len[i]);
		if (wr[i])
			continue;
		size_t take = size - at < len[i] ? size - at : len[i];
		memcpy(p, data + at, take);
		at += take;
	}
	fz_add_chain(fq, gpa, len, wr, n);
	return at;
}

#endif
