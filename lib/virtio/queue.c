/*
 * Split virtqueues, device side (virtio 1.2 section 2.7).
 *
 * Everything the ring holds is written by the guest, possibly while we read
 * it from another CPU, so every guest field is loaded exactly once into a
 * local (volatile or __atomic loads, never a plain dereference the compiler
 * could repeat) and only the local is checked and used.
 *
 * Layout of the three areas (all little-endian, Q = queue size):
 *   descriptor table  Q * 16 bytes: { le64 addr; le32 len; le16 flags; le16 next; }
 *   available ring    6 + 2Q:       { le16 flags; le16 idx; le16 ring[Q]; le16 used_event; }
 *   used ring         6 + 8Q:       { le16 flags; le16 idx; { le32 id; le32 len; } ring[Q];
 *                                     le16 avail_event; }
 *
 * Decisions where the specification leaves room:
 *  - A zero-length descriptor is accepted. It refers to no byte, so its
 *    address is not checked and it produces no iovec and no length; it still
 *    counts toward the chain-length bound and its WRITE flag still has to
 *    respect "device-readable before device-writable".
 *  - A chain whose total length (readable + writable) exceeds UINT32_MAX is
 *    refused: used.len is 32 bits and the spec forbids chains over 2^32 bytes.
 *  - An indirect table must be a non-zero multiple of 16 bytes and hold at
 *    most VIRTQ_MAX_SIZE descriptors; it may be larger than the queue. The
 *    chain inside it is bounded by its own number of entries.
 *  - Direct descriptors followed by one indirect descriptor (allowed by the
 *    spec) work; the whole chain must still fit VIRTQ_MAX_SIZE iovecs.
 *  - Flag bits other than NEXT/WRITE/INDIRECT are ignored; the WRITE flag of
 *    the descriptor that points at an indirect table is ignored (spec).
 */
#include "virtio/queue.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#include "memory.h"
#include "textbuf.h"

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define DESC_SIZE 16u
#define USED_ELEM_SIZE 8u

/* Offsets inside the available and used areas. */
#define RING_FLAGS 0u
#define RING_IDX 2u
#define RING_ENTRIES 4u

/* A descriptor after it has been copied out of guest memory. */
struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static bool size_ok(uint32_t size)
{
	return size >= 1 && size <= VIRTQ_MAX_SIZE && (size & (size - 1)) == 0;
}

static uint64_t desc_area_len(uint32_t size)
{
	return (uint64_t)DESC_SIZE * size;
}

static uint64_t avail_area_len(uint32_t size)
{
	return 6 + 2 * (uint64_t)size;
}

static uint64_t used_area_len(uint32_t size)
{
	return 6 + (uint64_t)USED_ELEM_SIZE * size;
}

/* Shared 16-bit fields: always 2-aligned (areas are checked at activation). */
static uint16_t load16(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED));
}

static void store16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, htole16(v), __ATOMIC_RELAXED);
}

static void store32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)(void *)p, htole32(v), __ATOMIC_RELAXED);
}

/*
 * Copy one descriptor out of guest memory, each field read once. The main
 * table is 16-aligned; an indirect table may sit at any address, in which
 * case it is copied byte by byte through a volatile pointer.
 */
static void desc_load(const uint8_t *p, struct desc *d)
{
	if (((uintptr_t)p & 7) == 0) {
		d->addr = le64toh(*(const volatile uint64_t *)(const void *)p);
		d->len = le32toh(*(const volatile uint32_t *)(const void *)(p + 8));
		d->flags = le16toh(*(const volatile uint16_t *)(const void *)(p + 12));
		d->next = le16toh(*(const volatile uint16_t *)(const void *)(p + 14));
		return;
	}
	const volatile uint8_t *s = p;
	uint8_t raw[DESC_SIZE];
	for (unsigned i = 0; i < DESC_SIZE; i++)
		raw[i] = s[i];
	uint64_t a;
	uint32_t l;
	uint16_t f, n;
	memcpy(&a, raw, 8);
	memcpy(&l, raw + 8, 4);
	memcpy(&f, raw + 12, 2);
	memcpy(&n, raw + 14, 2);
	d->addr = le64toh(a);
	d->len = le32toh(l);
	d->flags = le16toh(f);
	d->next = le16toh(n);
}

int virtq_activate(struct virtq *q)
{
	if (!q || !q->mem || !size_ok(q->size))
		return -EINVAL;
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return -EINVAL;
	if (!gm_ptr(q->mem, q->desc_gpa, desc_area_len(q->size)) ||
	    !gm_ptr(q->mem, q->avail_gpa, avail_area_len(q->size)) ||
	    !gm_ptr(q->mem, q->used_gpa, used_area_len(q->size)))
		return -EINVAL;
	q->last_avail = 0;
	q->used_idx = 0;
	q->signalled_used = 0;
	q->signalled_used_valid = false;
	return 0;
}

/* State of the walk over one chain. */
struct walk {
	struct virtq_chain *c;
	const struct guest_mem *mem;
	uint32_t niov;
	bool seen_in;
	uint64_t total;
};

/* Append the buffer of a (non-indirect) descriptor to the chain. */
static int walk_add(struct walk *w, const struct desc *d)
{
	bool in = d->flags & VIRTQ_DESC_F_WRITE;
	if (in)
		w->seen_in = true;
	else if (w->seen_in)
		return -EIO; /* device-readable after device-writable */
	if (d->len == 0)
		return 0;
	w->total += d->len; /* at most 2 * VIRTQ_MAX_SIZE terms below 2^32 */
	if (w->total > UINT32_MAX)
		return -EIO;
	if (w->niov >= VIRTQ_MAX_SIZE)
		return -EIO;
	void *p = gm_ptr(w->mem, d->addr, d->len);
	if (!p)
		return -EIO;
	struct virtq_chain *c = w->c;
	if (in) /* the device may write it: dirty for diff snapshots */
		gm_mark_dirty(w->mem, p, d->len);
	c->iov[w->niov].iov_base = p;
	c->iov[w->niov].iov_len = d->len;
	w->niov++;
	if (in) {
		c->n_in++;
		c->in_len += d->len;
	} else {
		c->n_out++;
		c->out_len += d->len;
	}
	return 0;
}

static int walk_chain(const struct virtq *q, const uint8_t *table, uint16_t head,
		      struct virtq_chain *c)
{
	struct walk w = { .c = c, .mem = q->mem };
	uint32_t entries = q->size; /* of the table being walked */
	uint32_t steps = 0;
	bool indirect = false;
	uint16_t idx = head;

	c->head = head;
	c->n_out = c->n_in = 0;
	c->out_len = c->in_len = 0;

	for (;;) {
		/* A chain can visit each entry of its table at most once. */
		if (++steps > entries)
			return -EIO;
		struct desc d;
		desc_load(table + (uint64_t)idx * DESC_SIZE, &d);

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!q->indirect || indirect)
				return -EIO;
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return -EIO;
			if (d.len == 0 || d.len % DESC_SIZE ||
			    d.len / DESC_SIZE > VIRTQ_MAX_SIZE)
				return -EIO;
			const uint8_t *t = gm_ptr(q->mem, d.addr, d.len);
			if (!t)
				return -EIO;
			table = t;
			entries = d.len / DESC_SIZE;
			steps = 0;
			indirect = true;
			idx = 0;
			continue;
		}

		int r = walk_add(&w, &d);
		if (r < 0)
			return r;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= entries)
			return -EIO;
		idx = d.next;
	}
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	if (!q->mem || !size_ok(q->size))
		return -EIO;
	uint8_t *avail = gm_ptr(q->mem, q->avail_gpa, avail_area_len(q->size));
	const uint8_t *table = gm_ptr(q->mem, q->desc_gpa, desc_area_len(q->size));
	if (!avail || !table || (q->avail_gpa & 1) || (q->desc_gpa & 15))
		return -EIO;

	uint16_t avail_idx = load16(avail + RING_IDX);
	uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
	if (pending == 0)
		return 0;
	if (pending > q->size)
		return -EIO;
	/* The ring entries and descriptors were written before avail->idx. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);

	uint32_t slot = q->last_avail & (q->size - 1u);
	uint16_t head = load16(avail + RING_ENTRIES + 2 * slot);
	if (head >= q->size)
		return -EIO;
	int r = walk_chain(q, table, head, c);
	if (r < 0)
		return r;
	q->last_avail++;
	return 1;
}

int virtq_skip_bad_chain(struct virtq *q)
{
	if (!q->mem || !size_ok(q->size))
		return -EIO;
	uint8_t *avail = gm_ptr(q->mem, q->avail_gpa, avail_area_len(q->size));
	if (!avail || (q->avail_gpa & 1))
		return -EIO;
	uint16_t pending = (uint16_t)(load16(avail + RING_IDX) - q->last_avail);
	if (pending == 0 || pending > q->size)
		return -EIO;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	uint16_t head = load16(avail + RING_ENTRIES + 2 * (q->last_avail & (q->size - 1u)));
	if (head >= q->size)
		return -EIO;
	q->last_avail++;
	return virtq_push(q, head, 0);
}

int virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	if (!q->mem || !size_ok(q->size) || head >= q->size || (q->used_gpa & 3))
		return -EIO;
	uint8_t *used = gm_ptr(q->mem, q->used_gpa, used_area_len(q->size));
	if (!used)
		return -EIO;
	uint32_t slot = q->used_idx & (q->size - 1u);
	uint8_t *elem = used + RING_ENTRIES + (uint64_t)USED_ELEM_SIZE * slot;
	store32(elem, head);
	store32(elem + 4, written);
	/* The element must be visible before the index that publishes it. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->used_idx++;
	store16(used + RING_IDX, q->used_idx);
	gm_mark_dirty(q->mem, used + RING_IDX, 2);
	gm_mark_dirty(q->mem, elem, USED_ELEM_SIZE);
	return 0;
}

/* The vring_need_event() rule: notify when used_event lies in [old, new). */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

bool virtq_should_notify(struct virtq *q)
{
	/* Our used->idx store must be ordered before reading the driver's
	 * suppression fields, or a driver re-enabling interrupts is missed. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);

	uint16_t old_idx = q->signalled_used;
	uint16_t new_idx = q->used_idx;
	bool valid = q->signalled_used_valid;
	q->signalled_used = new_idx;
	q->signalled_used_valid = true;

	if (!q->mem || !size_ok(q->size) || (q->avail_gpa & 1))
		return true;
	const uint8_t *avail = gm_ptr(q->mem, q->avail_gpa, avail_area_len(q->size));
	if (!avail)
		return true; /* a spurious interrupt is harmless */

	if (q->event_idx) {
		if (!valid)
			return true;
		uint16_t used_event = load16(avail + RING_ENTRIES + 2u * q->size);
		return need_event(used_event, new_idx, old_idx);
	}
	if (valid && new_idx == old_idx)
		return false; /* nothing pushed since the last call */
	uint16_t flags = load16(avail + RING_FLAGS);
	return !(flags & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void virtq_set_avail_event(struct virtq *q)
{
	if (!q->event_idx || !q->mem || !size_ok(q->size) || (q->used_gpa & 3))
		return;
	uint8_t *used = gm_ptr(q->mem, q->used_gpa, used_area_len(q->size));
	if (!used)
		return;
	uint8_t *avail_event = used + RING_ENTRIES + (uint64_t)USED_ELEM_SIZE * q->size;
	store16(avail_event, q->last_avail);
	gm_mark_dirty(q->mem, avail_event, 2);
	/* Publish avail_event before the caller re-reads avail->idx. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int virtq_pop_or_enable_notify(struct virtq *q, struct virtq_chain *c)
{
	int r = virtq_pop(q, c);
	if (r != 0)
		return r;
	/* Empty: ask for a notification, then look once more (the driver may
	 * have added a chain before it could see the new avail_event). */
	virtq_set_avail_event(q);
	return virtq_pop(q, c);
}

/*
 * Copy between a flat buffer and iov[0 .. n), skipping the first @off bytes of
 * the iovecs: into the iovecs from @src when it is non-NULL, else from the
 * iovecs into @dst.
 */
static uint64_t iov_copy(const struct iovec *iov, uint32_t n, uint64_t off, void *dst,
			 const void *src, uint64_t len)
{
	uint64_t done = 0;
	for (uint32_t i = 0; i < n && done < len; i++) {
		uint64_t il = iov[i].iov_len;
		if (off >= il) {
			off -= il;
			continue;
		}
		uint64_t chunk = il - off;
		if (chunk > len - done)
			chunk = len - done;
		uint8_t *p = (uint8_t *)iov[i].iov_base + off;
		if (src)
			memcpy(p, (const uint8_t *)src + done, chunk);
		else
			memcpy((uint8_t *)dst + done, p, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

uint64_t virtq_read(const struct virtq_chain *c, uint64_t off, void *dst, uint64_t len)
{
	if (!dst)
		return 0;
	uint32_t n = c->n_out <= VIRTQ_MAX_SIZE ? c->n_out : VIRTQ_MAX_SIZE;
	return iov_copy(c->iov, n, off, dst, NULL, len);
}

uint64_t virtq_write(const struct virtq_chain *c, uint64_t off, const void *src, uint64_t len)
{
	if (c->n_out >= VIRTQ_MAX_SIZE || !src)
		return 0;
	uint32_t n = c->n_in;
	if (n > VIRTQ_MAX_SIZE - c->n_out)
		n = VIRTQ_MAX_SIZE - c->n_out;
	return iov_copy(c->iov + c->n_out, n, off, NULL, src, len);
}

uint32_t virtq_iov_slice(const struct iovec *src, uint32_t n, uint64_t off, uint64_t len,
			 struct iovec *dst)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < n && len > 0; i++) {
		uint64_t l = src[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		uint64_t chunk = l - off < len ? l - off : len;
		dst[k].iov_base = (uint8_t *)src[i].iov_base + off;
		dst[k].iov_len = chunk;
		k++;
		len -= chunk;
		off = 0;
	}
	return k;
}

void virtq_report(const struct virtq *q, struct textbuf *t)
{
	tb_printf(t, "size %u, device: next avail %u, used %u, signalled %u%s", q->size,
		  q->last_avail, q->used_idx, q->signalled_used,
		  q->signalled_used_valid ? "" : " (none yet)");
	const uint8_t *avail = q->mem && size_ok(q->size) && !(q->avail_gpa & 1)
				       ? gm_ptr(q->mem, q->avail_gpa, avail_area_len(q->size)) : NULL;
	const uint8_t *used = q->mem && size_ok(q->size) && !(q->used_gpa & 3)
				      ? gm_ptr(q->mem, q->used_gpa, used_area_len(q->size)) : NULL;
	if (!avail || !used) {
		tb_printf(t, "; rings outside RAM\n");
		return;
	}
	tb_printf(t, "; driver: avail %u, flags 0x%x", load16(avail + RING_IDX),
		  load16(avail + RING_FLAGS));
	if (q->event_idx)
		tb_printf(t, ", used_event %u; avail_event %u",
			  load16(avail + RING_ENTRIES + 2u * q->size),
			  load16(used + RING_ENTRIES + (uint64_t)USED_ELEM_SIZE * q->size));
	tb_printf(t, "\n");
}
