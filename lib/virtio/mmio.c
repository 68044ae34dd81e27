#include "virtio/mmio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bus.h"
#include "errbuf.h"
#include "devices/host.h"
#include "microvm.h"
#include "snapshot/state.h"
#include "textbuf.h"

/* Register offsets (section 4.2.2). */
enum {
	REG_MAGIC = 0x000,
	REG_VERSION = 0x004,
	REG_DEVICE_ID = 0x008,
	REG_VENDOR_ID = 0x00c,
	REG_DEVICE_FEATURES = 0x010,
	REG_DEVICE_FEATURES_SEL = 0x014,
	REG_DRIVER_FEATURES = 0x020,
	REG_DRIVER_FEATURES_SEL = 0x024,
	REG_QUEUE_SEL = 0x030,
	REG_QUEUE_NUM_MAX = 0x034,
	REG_QUEUE_NUM = 0x038,
	REG_QUEUE_READY = 0x044,
	REG_QUEUE_NOTIFY = 0x050,
	REG_INTERRUPT_STATUS = 0x060,
	REG_INTERRUPT_ACK = 0x064,
	REG_STATUS = 0x070,
	REG_QUEUE_DESC_LOW = 0x080,
	REG_QUEUE_DESC_HIGH = 0x084,
	REG_QUEUE_DRIVER_LOW = 0x090,
	REG_QUEUE_DRIVER_HIGH = 0x094,
	REG_QUEUE_DEVICE_LOW = 0x0a0,
	REG_QUEUE_DEVICE_HIGH = 0x0a4,
	REG_SHM_SEL = 0x0ac,
	REG_SHM_LEN_LOW = 0x0b0,
	REG_SHM_LEN_HIGH = 0x0b4,
	REG_SHM_BASE_LOW = 0x0b8,
	REG_SHM_BASE_HIGH = 0x0bc,
	REG_CONFIG_GENERATION = 0x0fc,
	REG_CONFIG = 0x100,
};

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_MMIO_VERSION 2
#define VIRTIO_VENDOR_ID 0x4d564d4c  /* "LMVM" */
#define INT_USED_BUFFER 1u
#define INT_CONFIG_CHANGE 2u

/* Feature bits the transport and queue code provide for every device. */
#define TRANSPORT_FEATURES \
	((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_RING_EVENT_IDX) | \
	 (1ULL << VIRTIO_F_INDIRECT_DESC))

static uint64_t offered_features(const struct virtio_device *d)
{
	return d->features | TRANSPORT_FEATURES;
}

static void raise_irq(struct virtio_device *d, uint32_t why)
{
	d->int_status |= why;
	if (d->irq_fd >= 0) {
		uint64_t one = 1;
		ssize_t r = write(d->irq_fd, &one, sizeof(one));
		(void)r; /* only fails if the counter is saturated: still pending */
	}
}

void virtio_notify_used(struct virtio_device *d, uint16_t q)
{
	if (q < d->ops->num_queues && virtq_should_notify(&d->queues[q]))
		raise_irq(d, INT_USED_BUFFER);
}

void virtio_config_changed(struct virtio_device *d)
{
	d->config_generation++;
	if (d->status & VIRTIO_STATUS_DRIVER_OK)
		raise_irq(d, INT_CONFIG_CHANGE);
}

void virtio_config_changed_at_load(struct virtio_device *d)
{
	d->config_generation++;
	d->int_status |= INT_CONFIG_CHANGE;
}

void virtio_set_needs_reset(struct virtio_device *d, const char *why)
{
	if (d->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	host_log(d->host, MICROVM_LOG_WARN, "virtio %s: %s: device needs reset", d->ops->name,
		 why);
	d->status |= VIRTIO_STATUS_NEEDS_RESET;
	if (d->status & VIRTIO_STATUS_DRIVER_OK)
		raise_irq(d, INT_CONFIG_CHANGE);
}

static void device_reset(struct virtio_device *d)
{
	if (d->ops->reset)
		d->ops->reset(d->opaque);
	d->status = 0;
	d->dev_features_sel = d->drv_features_sel = 0;
	d->driver_features = 0;
	d->queue_sel = 0;
	d->int_status = 0;
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		struct virtq *q = &d->queues[i];
		memset(q, 0, sizeof(*q));
		q->mem = d->host->mem;
		q->size = VIRTQ_MAX_SIZE;
	}
}

static struct virtq *selected_queue(struct virtio_device *d)
{
	return d->queue_sel < d->ops->num_queues ? &d->queues[d->queue_sel] : NULL;
}

static uint32_t reg_read(struct virtio_device *d, uint64_t off)
{
	struct virtq *q = selected_queue(d);
	switch (off) {
	case REG_MAGIC: return VIRTIO_MMIO_MAGIC;
	case REG_VERSION: return VIRTIO_MMIO_VERSION;
	case REG_DEVICE_ID: return d->ops->device_id;
	case REG_VENDOR_ID: return VIRTIO_VENDOR_ID;
	case REG_DEVICE_FEATURES:
		if (d->dev_features_sel > 1)
			return 0;
		return (uint32_t)(offered_features(d) >> (32 * d->dev_features_sel));
	case REG_QUEUE_NUM_MAX: return q ? VIRTQ_MAX_SIZE : 0;
	case REG_QUEUE_READY: return q ? q->ready : 0;
	case REG_INTERRUPT_STATUS: return d->int_status;
	case REG_STATUS: return d->status;
	case REG_SHM_LEN_LOW:
	case REG_SHM_LEN_HIGH: return 0xffffffff; /* no shared memory regions */
	case REG_CONFIG_GENERATION: return d->config_generation;
	default: return 0;
	}
}

static void set_status(struct virtio_device *d, uint32_t v)
{
	if (v == 0) {
		device_reset(d);
		return;
	}
	uint32_t added = v & ~d->status;
	if (added & VIRTIO_STATUS_FEATURES_OK) {
		uint64_t f = d->driver_features;
		if ((f & ~offered_features(d)) || !(f & (1ULL << VIRTIO_F_VERSION_1)))
			v &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK; /* refuse: driver re-reads */
		for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) {
			d->queues[i].event_idx = f & (1ULL << VIRTIO_F_RING_EVENT_IDX);
			d->queues[i].indirect = f & (1ULL << VIRTIO_F_INDIRECT_DESC);
		}
	}
	d->status = (v & ~(uint32_t)VIRTIO_STATUS_NEEDS_RESET) |
		    (d->status & VIRTIO_STATUS_NEEDS_RESET);
	if ((added & VIRTIO_STATUS_DRIVER_OK) && d->ops->activate) {
		int r = d->ops->activate(d->opaque, d);
		if (r < 0)
			virtio_set_needs_reset(d, "activation failed");
	}
}

static void set_lo(uint64_t *v, uint32_t lo) { *v = (*v & ~0xffffffffULL) | lo; }
static void set_hi(uint64_t *v, uint32_t hi) { *v = (*v & 0xffffffffULL) | ((uint64_t)hi << 32); }

static void reg_write(struct virtio_device *d, uint64_t off, uint32_t v)
{
	struct virtq *q = selected_queue(d);
	/* Queue layout may change only while the queue is not ready. */
	bool q_writable = q && !q->ready;
	switch (off) {
	case REG_DEVICE_FEATURES_SEL: d->dev_features_sel = v; break;
	case REG_DRIVER_FEATURES_SEL: d->drv_features_sel = v; break;
	case REG_DRIVER_FEATURES:
		if (d->status & VIRTIO_STATUS_FEATURES_OK)
			break; /* too late */
		if (d->drv_features_sel == 0)
			set_lo(&d->driver_features, v);
		else if (d->drv_features_sel == 1)
			set_hi(&d->driver_features, v);
		break;
	case REG_QUEUE_SEL: d->queue_sel = v; break;
	case REG_QUEUE_NUM:
		if (q_writable)
			q->size = (uint16_t)(v > 0xffff ? 0 : v); /* checked at ready */
		break;
	case REG_QUEUE_READY:
		if (!q)
			break;
		if (v == 1 && !q->ready) {
			q->mem = d->host->mem;
			if (virtq_activate(q) < 0)
				virtio_set_needs_reset(d, "queue set up outside guest RAM or "
							  "with a bad size");
			else
				q->ready = true;
		} else if (v == 0) {
			q->ready = false;
		}
		break;
	case REG_QUEUE_NOTIFY:
		/* Normally caught by the ioeventfd; if it reaches us, hand it to
		 * the event loop the same way. */
		if (v < d->ops->num_queues && d->notify_fd[v] >= 0) {
			uint64_t one = 1;
			ssize_t r = write(d->notify_fd[v], &one, sizeof(one));
			(void)r;
		}
		break;
	case REG_INTERRUPT_ACK: d->int_status &= ~v; break;
	case REG_STATUS: set_status(d, v); break;
	case REG_QUEUE_DESC_LOW: if (q_writable) set_lo(&q->desc_gpa, v); break;
	case REG_QUEUE_DESC_HIGH: if (q_writable) set_hi(&q->desc_gpa, v); break;
	case REG_QUEUE_DRIVER_LOW: if (q_writable) set_lo(&q->avail_gpa, v); break;
	case REG_QUEUE_DRIVER_HIGH: if (q_writable) set_hi(&q->avail_gpa, v); break;
	case REG_QUEUE_DEVICE_LOW: if (q_writable) set_lo(&q->used_gpa, v); break;
	case REG_QUEUE_DEVICE_HIGH: if (q_writable) set_hi(&q->used_gpa, v); break;
	default: break; /* read-only or unknown: ignored */
	}
}

static void mmio_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct virtio_device *d = opaque;
	memset(data, 0, len);
	pthread_mutex_lock(&d->lock);
	if (off >= REG_CONFIG) {
		uint64_t coff = off - REG_CONFIG;
		if (d->ops->config_read && coff < d->ops->config_size &&
		    len <= d->ops->config_size - coff)
			d->ops->config_read(d->opaque, (uint32_t)coff, data, len);
	} else if (len == 4 && !(off & 3)) {
		uint32_t v = reg_read(d, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&d->lock);
}

static void mmio_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct virtio_device *d = opaque;
	pthread_mutex_lock(&d->lock);
	if (off >= REG_CONFIG) {
		uint64_t coff = off - REG_CONFIG;
		if (d->ops->config_write && coff < d->ops->config_size &&
		    len <= d->ops->config_size - coff)
			d->ops->config_write(d->opaque, (uint32_t)coff, data, len);
	} else if (len == 4 && !(off & 3)) {
		uint32_t v;
		memcpy(&v, data, 4);
		reg_write(d, off, v);
	}
	pthread_mutex_unlock(&d->lock);
}

const struct bus_ops virtio_mmio_ops = { mmio_read, mmio_write };

/* Queue @q was notified, as its eventfd's count said: hand it to the device
 * if the queue is live. Lock held. */
static void handle_notify(struct virtio_device *d, uint16_t q)
{
	if ((d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    d->queues[q].ready && d->ops->notify)
		d->ops->notify(d->opaque, d, q);
}

/* Event loop: a queue was notified (its eventfd is readable). */
static void queue_notified(void *opaque, uint32_t events)
{
	struct virtio_queue_notify *n = opaque;
	struct virtio_device *d = n->dev;
	uint64_t count;
	ssize_t r = read(d->notify_fd[n->queue], &count, sizeof(count)); /* clear it */
	(void)r;
	(void)events;
	pthread_mutex_lock(&d->lock);
	handle_notify(d, n->queue);
	pthread_mutex_unlock(&d->lock);
}

int virtio_mmio_new(const struct dev_host *host, const struct virtio_device_ops *ops,
		    void *opaque, uint64_t base, uint32_t gsi, struct virtio_device **out)
{
	if (!ops || ops->num_queues == 0 || ops->num_queues > VIRTIO_MAX_QUEUES)
		return -EINVAL;
	struct virtio_device *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->host = host;
	d->ops = ops;
	d->opaque = opaque;
	d->features = ops->features;
	d->base = base;
	d->gsi = gsi;
	pthread_mutex_init(&d->lock, NULL);
	d->irq_fd = -1;
	for (int i = 0; i < VIRTIO_MAX_QUEUES; i++)
		d->notify_fd[i] = -1;
	device_reset(d);
	*out = d;
	return 0;
}

/* One queue's notify eventfd: written by KVM on the guest's QueueNotify
 * write, watched on the event loop. */
static int start_queue(struct virtio_device *d, uint16_t q)
{
	d->notify_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->notify_fd[q] < 0)
		return -errno;
	int r = d->host->ioeventfd(d->host->ctx, d->notify_fd[q], d->base + REG_QUEUE_NOTIFY, 4, q);
	if (r < 0)
		return r;
	d->notify_ctx[q] = (struct virtio_queue_notify){ d, q };
	ev_handler_set(&d->notify_handler[q], d->notify_fd[q], queue_notified, &d->notify_ctx[q]);
	return evloop_add(d->host->loop, &d->notify_handler[q], EPOLLIN);
}

int virtio_mmio_start(struct virtio_device *d)
{
	d->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->irq_fd < 0)
		return -errno;
	int r = d->host->irqfd(d->host->ctx, d->irq_fd, d->gsi);
	for (uint16_t q = 0; r == 0 && q < d->ops->num_queues; q++)
		r = start_queue(d, q);
	return r;
}

void virtio_mmio_free(struct virtio_device *d)
{
	virtio_mmio_release(d);
	if (d->ops->release)
		d->ops->release(d->opaque);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void virtio_mmio_discard(struct virtio_device *d)
{
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void virtio_mmio_release(struct virtio_device *d)
{
	/* Quiesce the device first: a reset waits for its in-flight I/O, which
	 * targets guest RAM that is unmapped right after this. */
	pthread_mutex_lock(&d->lock);
	if (d->ops->reset)
		d->ops->reset(d->opaque);
	pthread_mutex_unlock(&d->lock);
	/* The VM fd is closed right after (or already being torn down), which
	 * drops the ioeventfd/irqfd registrations with it. */
	for (int q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		if (d->notify_fd[q] >= 0)
			close(d->notify_fd[q]);
		d->notify_fd[q] = -1;
	}
	if (d->irq_fd >= 0)
		close(d->irq_fd);
	d->irq_fd = -1;
}

/* ---------------------------------------------------------------- snapshot */

void virtio_mmio_quiesce(struct virtio_device *d)
{
	pthread_mutex_lock(&d->lock);
	/* A QueueNotify the guest wrote that the stopped loop has not read:
	 * the eventfd is not saved, so handle it now, or the saved guest would
	 * wait for a request its device never looks at. */
	for (uint16_t q = 0; q < d->ops->num_queues; q++) {
		uint64_t count;
		if (d->notify_fd[q] >= 0 && read(d->notify_fd[q], &count, sizeof(count)) > 0)
			handle_notify(d, q);
	}
	if (d->ops->quiesce)
		d->ops->quiesce(d->opaque, d);
	pthread_mutex_unlock(&d->lock);
}

void virtio_mmio_vm_stopped(struct virtio_device *d)
{
	if (!d->ops->vm_stopped)
		return;
	pthread_mutex_lock(&d->lock);
	d->ops->vm_stopped(d->opaque);
	pthread_mutex_unlock(&d->lock);
}

void virtio_mmio_report(struct virtio_device *d, const char *indent, struct textbuf *t)
{
	pthread_mutex_lock(&d->lock);
	tb_printf(t, "%s%s at 0x%llx, irq %u: status 0x%x, interrupt status 0x%x, "
		  "features 0x%llx\n", indent, d->ops->name, (unsigned long long)d->base, d->gsi,
		  d->status, d->int_status, (unsigned long long)d->driver_features);
	for (uint32_t q = 0; q < d->ops->num_queues; q++) {
		if (!d->queues[q].ready)
			continue;
		tb_printf(t, "%s  queue %u: ", indent, q);
		virtq_report(&d->queues[q], t);
	}
	pthread_mutex_unlock(&d->lock);
}

/* The registers a driver writes, and a queue's state: saved and loaded as
 * tables; load checks each against what the model can hold. */
static const struct st_field reg_fields[] = {
	ST_FIELD(struct virtio_device, driver_features, "driver-features", UINT64_MAX),
	ST_FIELD(struct virtio_device, status, "status", 0xff),
	ST_FIELD(struct virtio_device, dev_features_sel, "device-features-sel", UINT32_MAX),
	ST_FIELD(struct virtio_device, drv_features_sel, "driver-features-sel", UINT32_MAX),
	ST_FIELD(struct virtio_device, queue_sel, "queue-sel", UINT32_MAX),
	ST_FIELD(struct virtio_device, int_status, "interrupt-status",
		 INT_USED_BUFFER | INT_CONFIG_CHANGE),
	ST_FIELD(struct virtio_device, config_generation, "config-generation", UINT32_MAX),
};

static const struct st_field queue_fields[] = {
	ST_FIELD(struct virtq, size, "size", UINT16_MAX), /* checked when ready */
	ST_FIELD(struct virtq, ready, "ready", 1),
	ST_FIELD(struct virtq, desc_gpa, "desc", UINT64_MAX),
	ST_FIELD(struct virtq, avail_gpa, "avail", UINT64_MAX),
	ST_FIELD(struct virtq, used_gpa, "used", UINT64_MAX),
	ST_FIELD(struct virtq, last_avail, "last-avail", UINT16_MAX),
	ST_FIELD(struct virtq, used_idx, "used-idx", UINT16_MAX),
	ST_FIELD(struct virtq, signalled_used, "signalled-used", UINT16_MAX),
	ST_FIELD(struct virtq, signalled_used_valid, "signalled-used-valid", 1),
};
#define NFIELDS(t) (sizeof(t) / sizeof((t)[0]))

/* What the device is: saved, and on restore checked against the device the
 * restored VM has in this slot (not loaded). */
struct identity {
	uint64_t device_id, base, gsi, offered;
};

static const struct st_field identity_fields[] = {
	ST_FIELD(struct identity, device_id, "device-id", UINT32_MAX),
	ST_FIELD(struct identity, base, "base", UINT64_MAX),
	ST_FIELD(struct identity, gsi, "gsi", UINT32_MAX),
	ST_FIELD(struct identity, offered, "offered-features", UINT64_MAX),
};

int virtio_mmio_saved_id(const void *fdt, int node, uint32_t *id, char *err, size_t errlen)
{
	struct identity saved;
	int r = st_load_fields(fdt, node, &saved, identity_fields, NFIELDS(identity_fields), err,
			       errlen);
	if (r == 0)
		*id = (uint32_t)saved.device_id;
	return r;
}

static struct identity identity_of(const struct virtio_device *d)
{
	return (struct identity){ d->ops->device_id, d->base, d->gsi, offered_features(d) };
}

void virtio_mmio_save(struct virtio_device *d, struct st_writer *w, int node)
{
	pthread_mutex_lock(&d->lock);
	struct identity id = identity_of(d);
	st_save_fields(w, node, &id, identity_fields, NFIELDS(identity_fields));
	st_save_fields(w, node, d, reg_fields, NFIELDS(reg_fields));
	for (uint16_t i = 0; i < d->ops->num_queues; i++) {
		char name[16];
		snprintf(name, sizeof(name), "queue@%u", i);
		st_save_fields(w, st_node(w, node, name), &d->queues[i], queue_fields,
			       NFIELDS(queue_fields));
	}
	int dn = st_node(w, node, "device"); /* always there, for ops->load */
	if (d->ops->save)
		d->ops->save(d->opaque, w, dn);
	pthread_mutex_unlock(&d->lock);
}

/* A queue as saved: loaded into a copy, checked, then installed. */
static int load_queue(struct virtio_device *d, struct virtq *q, const void *fdt, int qn,
		      char *err, size_t errlen)
{
	struct virtq saved;
	memset(&saved, 0, sizeof(saved));
	int r = st_load_fields(fdt, qn, &saved, queue_fields, NFIELDS(queue_fields), err, errlen);
	if (r < 0)
		return r;
	saved.mem = d->host->mem;
	saved.event_idx = d->driver_features & (1ULL << VIRTIO_F_RING_EVENT_IDX);
	saved.indirect = d->driver_features & (1ULL << VIRTIO_F_INDIRECT_DESC);
	if (saved.ready) {
		struct virtq check = saved; /* virtq_activate resets the indices */
		if (virtq_activate(&check) < 0)
			return errbuf_fail(err, errlen, -EINVAL, "virtio %s: saved queue lies outside "
					   "guest RAM or has a bad size", d->ops->name);
	}
	*q = saved;
	return 0;
}

/* The saved device must be the one the restored VM has in this slot. */
static int check_identity(struct virtio_device *d, const void *fdt, int node, char *err,
			  size_t errlen)
{
	struct identity saved, mine = identity_of(d);
	int r = st_load_fields(fdt, node, &saved, identity_fields, NFIELDS(identity_fields), err,
			       errlen);
	if (r < 0)
		return r;
	if (saved.device_id != mine.device_id || saved.base != mine.base || saved.gsi != mine.gsi)
		return errbuf_fail(err, errlen, -EINVAL, "virtio device at 0x%llx: the snapshot "
				   "has device %llu at 0x%llx (GSI %llu), the restored VM %llu (GSI "
				   "%llu)", (unsigned long long)mine.base,
				   (unsigned long long)saved.device_id, (unsigned long long)saved.base,
				   (unsigned long long)saved.gsi, (unsigned long long)mine.device_id,
				   (unsigned long long)mine.gsi);
	if (saved.offered != mine.offered)
		return errbuf_fail(err, errlen, -EINVAL, "virtio %s: features differ from the "
				   "snapshot's (0x%llx, snapshot 0x%llx)", d->ops->name,
				   (unsigned long long)mine.offered, (unsigned long long)saved.offered);
	return 0;
}

/* After the state is in: activate the device if the driver had, and raise
 * an interrupt that was pending (the irqchip state holds the line level; a
 * re-raise is harmless). Lock held. */
static void resume_device(struct virtio_device *d)
{
	if ((d->status & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    d->ops->activate && d->ops->activate(d->opaque, d) < 0)
		virtio_set_needs_reset(d, "activation after restore failed");
	if (d->int_status && d->irq_fd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(d->irq_fd, &one, sizeof(one));
		(void)w;
	}
}

int virtio_mmio_load(struct virtio_device *d, const void *fdt, int node, char *err,
		     size_t errlen)
{
	int r = check_identity(d, fdt, node, err, errlen);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	uint32_t status = 0;
	r = st_load_fields(fdt, node, d, reg_fields, NFIELDS(reg_fields), err, errlen);
	if (r == 0 && (d->driver_features & ~offered_features(d)))
		r = errbuf_fail(err, errlen, -EINVAL, "virtio %s: driver features 0x%llx were "
				"never offered", d->ops->name,
				(unsigned long long)d->driver_features);
	status = d->status;
	d->status = 0; /* not active until everything is loaded */
	for (uint16_t i = 0; r == 0 && i < d->ops->num_queues; i++) {
		char name[16];
		snprintf(name, sizeof(name), "queue@%u", i);
		int qn = st_sub(fdt, node, name, err, errlen);
		r = qn < 0 ? qn : load_queue(d, &d->queues[i], fdt, qn, err, errlen);
	}
	if (r == 0 && d->ops->load) {
		int dn = st_sub(fdt, node, "device", err, errlen);
		r = dn < 0 ? dn : d->ops->load(d->opaque, d, fdt, dn, err, errlen);
	}
	if (r == 0) {
		d->status = status;
		resume_device(d);
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}
