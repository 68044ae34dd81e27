/*
 * virtio-rng, the entropy device (virtio 1.2 section 5.4): device ID 4, one
 * virtqueue (requestq), no feature bits, no configuration space. The driver
 * posts device-writable buffers; the device fills them with random bytes
 * from the host's getrandom() and returns them with the number of bytes
 * written.
 *
 * Decisions where the specification leaves room:
 *  - At most VIRTIO_RNG_MAX_REQUEST bytes are given per request (the spec
 *    lets the device use less than the whole buffer, but at least one byte).
 *  - A request with a device-readable buffer is a protocol violation: the
 *    device is marked DEVICE_NEEDS_RESET.
 *  - getrandom() runs with GRND_NONBLOCK, so the event loop never waits for
 *    the host's entropy pool. If the pool is not initialised yet (early in
 *    the host's boot, or a host with few entropy sources, e.g. an emulated
 *    machine that does not trust its CPU's RDRAND) the request stays in the
 *    ring and the event loop watches /dev/random, which becomes readable
 *    once the pool is initialised; the requests are served then. The device
 *    never hands out bytes from an unseeded pool (the guest driver credits
 *    them as full entropy).
 */
#include "virtio/devices.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "virtio/mmio.h"
#include "virtio/queue.h"
#include "errbuf.h"
#include "devices/host.h"
#include "microvm.h"

struct virtio_rng {
	const struct dev_host *host;
	struct virtio_device *vdev;
	bool warned_no_entropy;
	int ready_fd; /* /dev/random, watched while the host has no entropy, or -1 */
	struct ev_handler ready_handler;
	struct virtq_chain chain; /* scratch for virtio_rng_process (large) */
};

#define rng_warn(r, ...) host_log((r)->host, MICROVM_LOG_WARN, __VA_ARGS__)

#ifndef GRND_INSECURE
#define GRND_INSECURE 0x0004 /* Linux 5.6+ */
#endif

/* Fill up to @want bytes of the writable buffers of @c. Returns the bytes
 * written; *@err is set to a negative errno if getrandom() failed. */
static uint32_t fill_random(const struct virtq_chain *c, uint32_t want, int *err)
{
	uint32_t done = 0;
	uint32_t end = c->n_out + c->n_in;
	if (end > VIRTQ_MAX_SIZE)
		end = VIRTQ_MAX_SIZE;
	*err = 0;
	for (uint32_t i = c->n_out; i < end && done < want; i++) {
		uint8_t *p = c->iov[i].iov_base;
		size_t len = c->iov[i].iov_len;
		if (len > want - done)
			len = want - done;
		size_t off = 0;
		while (off < len) {
			ssize_t n = getrandom(p + off, len - off, GRND_NONBLOCK);
			if (n < 0 && errno == EAGAIN) {
				/* The host's pool is not initialized yet (a host
				 * in early boot). Never block the event loop: take
				 * what the kernel has, as /dev/urandom would. */
				n = getrandom(p + off, len - off, GRND_INSECURE);
			}
			if (n > 0) {
				off += (size_t)n;
			} else if (n < 0 && errno == EINTR) {
				continue;
			} else {
				*err = n < 0 ? -errno : -EIO;
				return done + (uint32_t)off;
			}
		}
		done += (uint32_t)len;
	}
	return done;
}

int virtio_rng_process(struct virtq *q, struct virtq_chain *c, uint32_t *pushed)
{
	for (;;) {
		int r = virtq_pop_or_enable_notify(q, c);
		if (r < 0)
			return -EIO;
		if (r == 0)
			return 0;
		if (c->n_out > 0)
			return -EIO; /* requests are device-writable only */
		uint32_t want = c->in_len < VIRTIO_RNG_MAX_REQUEST ? (uint32_t)c->in_len
								    : VIRTIO_RNG_MAX_REQUEST;
		int err = 0;
		uint32_t got = fill_random(c, want, &err);
		if (got == 0 && want > 0) {
			/* Nothing to give: leave the request in the ring (it
			 * was only looked at, nothing was written). */
			q->last_avail--;
			return err < 0 ? err : -EAGAIN;
		}
		if (virtq_push(q, c->head, got) < 0)
			return -EIO;
		(*pushed)++;
	}
}

/* ------------------------------------------------------- transport glue */

/* Ask the event loop to look at queue @q (as a driver notification would). */
static void self_notify(struct virtio_device *vdev, uint16_t q)
{
	if (vdev->notify_fd[q] >= 0) {
		uint64_t one = 1;
		ssize_t n = write(vdev->notify_fd[q], &one, sizeof(one));
		(void)n; /* only fails when the counter is saturated: still pending */
	}
}

static int rng_activate(void *opaque, struct virtio_device *vdev)
{
	struct virtio_rng *r = opaque;
	r->vdev = vdev;
	/* Requests posted before DRIVER_OK were notified while the transport
	 * ignored notifications: look at the ring once now. */
	self_notify(vdev, 0);
	return 0;
}

static void rng_serve(struct virtio_rng *r, struct virtio_device *vdev);

static void stop_waiting(struct virtio_rng *r)
{
	if (r->ready_fd < 0)
		return;
	evloop_del(r->host->loop, &r->ready_handler);
	close(r->ready_fd);
	r->ready_fd = -1;
}

/* Event loop: /dev/random is readable, the host's pool is initialised. */
static void entropy_ready(void *opaque, uint32_t events)
{
	struct virtio_rng *r = opaque;
	struct virtio_device *d = r->vdev;
	(void)events;
	pthread_mutex_lock(&d->lock);
	stop_waiting(r);
	if ((d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    d->queues[0].ready)
		rng_serve(r, d);
	pthread_mutex_unlock(&d->lock);
}

/* The host has no entropy yet: serve the waiting requests once it has. */
static void wait_for_entropy(struct virtio_rng *r)
{
	if (r->ready_fd >= 0)
		return;
	int fd = open("/dev/random", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		rng_warn(r, "virtio-rng: /dev/random: %s; requests wait for the next "
			"notification", strerror(errno));
		return;
	}
	ev_handler_set(&r->ready_handler, fd, entropy_ready, r);
	int e = evloop_add(r->host->loop, &r->ready_handler, EPOLLIN);
	if (e < 0) {
		close(fd);
		rng_warn(r, "virtio-rng: cannot watch /dev/random: %s; requests wait for "
			"the next notification", strerror(-e));
		return;
	}
	r->ready_fd = fd;
}

/* Serve the requestq (transport lock held). */
static void rng_serve(struct virtio_rng *r, struct virtio_device *vdev)
{
	uint32_t pushed = 0;
	int e = virtio_rng_process(&vdev->queues[0], &r->chain, &pushed);
	if (e == -EIO) {
		virtio_set_needs_reset(vdev, "malformed request ring or a device-readable "
					     "request buffer");
	} else if (e < 0) {
		if (!r->warned_no_entropy) {
			r->warned_no_entropy = true;
			rng_warn(r, "virtio-rng: getrandom: %s; requests wait%s", strerror(-e),
				e == -EAGAIN ? " until the host's entropy pool is initialised" : "");
		}
		if (e == -EAGAIN)
			wait_for_entropy(r);
	}
	if (pushed)
		virtio_notify_used(vdev, 0);
}

static void rng_notify(void *opaque, struct virtio_device *vdev, uint16_t q)
{
	struct virtio_rng *r = opaque;
	if (r->ready_fd >= 0)
		return; /* waiting for entropy: served when /dev/random is ready */
	rng_serve(r, vdev);
}

static void rng_release(void *opaque)
{
	struct virtio_rng *r = opaque;
	if (!r)
		return;
	/* The event loop is gone by now (and its epoll fd with it). */
	if (r->ready_fd >= 0)
		close(r->ready_fd);
	free(r);
}

const struct virtio_device_ops virtio_rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_ENTROPY,
	.features = 0,
	.num_queues = 1,
	.config_size = 0,
	.activate = rng_activate,
	.notify = rng_notify,
	.release = rng_release,
};

struct virtio_rng *virtio_rng_new(const struct dev_host *host)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->host = host;
	r->ready_fd = -1;
	return r;
}

void virtio_rng_free(struct virtio_rng *r)
{
	rng_release(r);
}
