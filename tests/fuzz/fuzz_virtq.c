/*
 * The split-virtqueue walker (lib/virtio/queue.c) against a hostile driver:
 * the input is written as-is over the descriptor table, the available ring
 * and an indirect table area, with the queue size and features from its
 * first bytes; the device side then pops, skips bad chains and pushes until
 * the ring is empty or broken. Any out-of-RAM access, loop or overflow is a
 * sanitizer report.
 */
#include "fuzz.h"

static struct guest_mem mem;

#define DESC 0x10000ULL
#define AVAIL 0x20000ULL
#define USED 0x30000ULL
#define IND 0x40000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!mem.host)
		fz_ram(&mem, FZ_RAM);
	if (size < 4)
		return 0;
	struct virtq q;
	memset(&q, 0, sizeof(q));
	q.mem = &mem;
	q.size = (uint16_t)(1u << (data[0] % 11)); /* 1..1024 */
	q.indirect = data[1] & 1;
	q.event_idx = data[1] & 2;
	q.desc_gpa = DESC;
	q.avail_gpa = AVAIL;
	q.used_gpa = USED;
	if (virtq_activate(&q) < 0)
		return 0;
	q.ready = true;
	q.last_avail = (uint16_t)(data[2] | data[3] << 8);
	q.used_idx = q.last_avail;
	data += 4;
	size -= 4;
	/* desc table (16 * size), then avail ring (6 + 2 * size), then the
	 * indirect area: consecutive slices of the input */
	size_t dlen = 16u * q.size, alen = 6u + 2u * q.size;
	memset(gm_ptr(&mem, DESC, 0x40000), 0, 0x40000);
	size_t n = size < dlen ? size : dlen;
	memcpy(gm_ptr(&mem, DESC, n), data, n);
	data += n, size -= n;
	n = size < alen ? size : alen;
	memcpy(gm_ptr(&mem, AVAIL, n), data, n);
	data += n, size -= n;
	n = size < 0x10000 ? size : 0x10000;
	memcpy(gm_ptr(&mem, IND, n), data, n);

	static struct virtq_chain c;
	for (int i = 0; i < 2 * VIRTQ_MAX_SIZE; i++) {
		int r = virtq_pop(&q, &c);
		if (r == 0)
			break;
		if (r < 0) {
			if (virtq_skip_bad_chain(&q) < 0)
				break;
			continue;
		}
		/* touch every buffer the device was given: must be in RAM */
		for (uint32_t k = 0; k < c.n_out + c.n_in; k++)
			if (c.iov[k].iov_len)
				((volatile uint8_t *)c.iov[k].iov_base)[c.iov[k].iov_len - 1];
		if (virtq_push(&q, c.head, (uint32_t)c.in_len) < 0)
			break;
		(void)virtq_should_notify(&q);
	}
	return 0;
}
