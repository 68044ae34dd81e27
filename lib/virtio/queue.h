/*
 * Split virtqueues (virtio 1.2 section 2.7), device side.
 *
 * The guest is hostile: every address and length it gives is checked through
 * the one guest-memory accessor (gm_ptr), descriptor chains are bounded by
 * the queue size (so loops end), indirect tables are bounded and may not
 * nest, and the indices the guest writes are copied before use. A malformed
 * ring makes virtq_pop()/virtq_push() return -EIO; the transport then marks
 * the device DEVICE_NEEDS_RESET. Nothing a guest writes can crash the host.
 */
#ifndef MICROVM_VIRTQ_H
#define MICROVM_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct guest_mem;
struct textbuf;

#define VIRTQ_MAX_SIZE 1024 /* largest queue we offer (QueueNumMax) */

/* Feature bits the queue code implements. */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

struct virtq {
	struct guest_mem *mem;
	/* Set by the transport from the driver's registers. */
	uint16_t size; /* power of two, 1..VIRTQ_MAX_SIZE */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool ready;
	bool event_idx; /* VIRTIO_F_RING_EVENT_IDX negotiated */
	bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated */
	/* Device-side state (also what a snapshot saves). */
	uint16_t last_avail; /* next avail ring entry to take */
	uint16_t used_idx;   /* our copy of used->idx */
	uint16_t signalled_used;
	bool signalled_used_valid;
};

/* One buffer of a chain, already resolved to host memory. */
struct virtq_chain {
	uint16_t head;     /* descriptor index to hand back with virtq_push */
	uint32_t n_out;    /* device-readable buffers, first in iov[] */
	uint32_t n_in;     /* device-writable buffers, after them */
	uint64_t out_len;  /* total bytes readable */
	uint64_t in_len;   /* total bytes writable */
	struct iovec iov[VIRTQ_MAX_SIZE];
};

/*
 * Check the ring addresses of a queue the driver made ready: size a power of
 * two <= VIRTQ_MAX_SIZE, the three areas aligned (16/2/4) and inside guest
 * RAM. 0 or -EINVAL. Resets last_avail/used_idx.
 */
int virtq_activate(struct virtq *q);

/*
 * Take the next available chain. Returns 1 and fills @c, 0 if the ring is
 * empty, -EIO if the guest's ring is malformed (bad index, address outside
 * RAM, length overflow, loop, a readable buffer after a writable one, nested
 * indirect table, chain longer than the queue).
 */
int virtq_pop(struct virtq *q, struct virtq_chain *c);

/*
 * After virtq_pop() returned -EIO: if the ring itself is sane (index and
 * head in range) and only the chain it points at is malformed (a descriptor
 * outside RAM, a loop...), give that chain back unused (length 0) so the
 * device can drop it and go on. 0, or -EIO if the ring is broken.
 */
int virtq_skip_bad_chain(struct virtq *q);

/* Give chain @head back with @written bytes written to its in-buffers.
 * 0 or -EIO (used ring outside RAM). */
int virtq_push(struct virtq *q, uint16_t head, uint32_t written);

/*
 * Whether the driver wants an interrupt for the buffers pushed since the last
 * call (VRING_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX). Call once
 * after a batch of pushes.
 */
bool virtq_should_notify(struct virtq *q);

/*
 * With EVENT_IDX, tell the driver which avail index should next notify us
 * (avail_event = last_avail), before re-checking the ring when it was found
 * empty. No-op otherwise.
 */
void virtq_set_avail_event(struct virtq *q);

/*
 * virtq_pop(), and when the ring is empty: virtq_set_avail_event() and one
 * more virtq_pop(), so a chain the driver adds before it sees the new
 * avail_event is not left waiting for a notification that never comes.
 * Returns 1 and fills @c, 0 if the ring is still empty (notification
 * requested), -EIO if the ring is malformed.
 */
int virtq_pop_or_enable_notify(struct virtq *q, struct virtq_chain *c);

/* The iovecs covering bytes [@off, @off + @len) of @src (@n entries) into
 * @dst (room for @n entries). Returns how many were written. */
uint32_t virtq_iov_slice(const struct iovec *src, uint32_t n, uint64_t off, uint64_t len,
			 struct iovec *dst);

/* Copy helpers over a chain's iovecs: gather from out-buffers starting at
 * byte @off, scatter into in-buffers. Return bytes copied. */
uint64_t virtq_read(const struct virtq_chain *c, uint64_t off, void *dst, uint64_t len);
uint64_t virtq_write(const struct virtq_chain *c, uint64_t off, const void *src, uint64_t len);

/* Append one line on a ready queue for microvm_describe(): the device's
 * indices and what the driver last wrote in the rings (read now). */
void virtq_report(const struct virtq *q, struct textbuf *t);

#endif
