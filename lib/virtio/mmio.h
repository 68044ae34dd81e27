/*
 * virtio-mmio transport, version 2 (virtio 1.2 section 4.2): a device is a
 * device ops table plus an opaque, wrapped by virtio_mmio_new(); the VM puts
 * it on its bus (vm_virtio_add, lib/vm_devices.h).
 * Transport and device stay separate: the transport owns the registers,
 * feature negotiation, queues, notifications (ioeventfd -> the VM's event
 * loop) and interrupts (irqfd); the device implements its config space and
 * what to do with its queues.
 */
#ifndef MICROVM_VIRTIO_MMIO_H
#define MICROVM_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evloop.h"
#include "microvm.h"
#include "virtio/queue.h"

struct textbuf;
struct bus_ops;
struct dev_host;
struct virtio_device;
struct st_writer;

#define VIRTIO_MAX_QUEUES 8
#define VIRTIO_MMIO_SIZE 0x1000
#define VIRTIO_MMIO_MAX_DEVICES 16

/* Device status bits (section 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

struct virtio_device_ops {
	const char *name;  /* static string, for messages */
	uint32_t device_id;
	uint64_t features; /* device-specific feature bits offered */
	uint16_t num_queues;
	uint32_t config_size;
	/* Config space access, offset already checked against config_size.
	 * Called on vCPU threads with the transport lock held. */
	void (*config_read)(void *opaque, uint32_t off, void *data, uint32_t len);
	void (*config_write)(void *opaque, uint32_t off, const void *data, uint32_t len);
	/* The driver set DRIVER_OK: queues are ready. 0 or negative errno (the
	 * device is then marked as needing reset). Lock held. */
	int (*activate)(void *opaque, struct virtio_device *vdev);
	/* The driver notified queue @q. Runs on the VM's event loop thread with
	 * the transport lock held. */
	void (*notify)(void *opaque, struct virtio_device *vdev, uint16_t q);
	/* The driver reset the device (status 0). Lock held. */
	void (*reset)(void *opaque);
	/* The VM is being destroyed: free @opaque. Optional. */
	void (*release)(void *opaque);
	/* Snapshot, optional. quiesce: the event loop is stopped; finish all
	 * in-flight work that touches guest memory or queue state (lock held).
	 * save: add device state to @node. load: restore it after the transport
	 * state was loaded and before the device is activated (a restored VM).
	 * 0 or negative errno with a message in @err. */
	void (*quiesce)(void *opaque, struct virtio_device *vdev);
	void (*save)(void *opaque, struct st_writer *w, int node);
	int (*load)(void *opaque, struct virtio_device *vdev, const void *fdt, int node,
		    char *err, size_t errlen);
	/* Optional. The VM stopped (its last vCPU left: the guest reset,
	 * powered off or crashed, or the host stopped it): end what only a
	 * running guest can finish, so that nobody on the host waits for it
	 * (vsock: the host's streams are reset). Runs on the last vCPU
	 * thread, lock held. */
	void (*vm_stopped)(void *opaque);
};

struct virtio_queue_notify {
	struct virtio_device *dev;
	uint16_t queue;
};

struct virtio_device {
	const struct dev_host *host; /* the VM, as devices see it */
	const struct virtio_device_ops *ops;
	void *opaque;
	uint64_t features; /* device-specific bits offered: ops->features unless
			    * the device sets its own right after virtio_mmio_new */
	uint64_t base;
	uint32_t gsi;
	pthread_mutex_t lock;
	/* registers */
	uint32_t status;
	uint32_t dev_features_sel;
	uint32_t drv_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	uint32_t int_status;
	uint32_t config_generation;
	struct virtq queues[VIRTIO_MAX_QUEUES];
	/* notifications and interrupts */
	int notify_fd[VIRTIO_MAX_QUEUES];
	struct ev_handler notify_handler[VIRTIO_MAX_QUEUES];
	struct virtio_queue_notify notify_ctx[VIRTIO_MAX_QUEUES];
	int irq_fd;
};

/*
 * A new virtio device with its registers at @base (VIRTIO_MMIO_SIZE bytes)
 * and its interrupt on @gsi, in reset state; the VM registers
 * virtio_mmio_ops for it on its MMIO bus and announces it to the guest.
 * @host, @ops and @opaque are borrowed for the device's life. 0, -EINVAL (bad
 * ops table) or -ENOMEM.
 */
int virtio_mmio_new(const struct dev_host *host, const struct virtio_device_ops *ops,
		    void *opaque, uint64_t base, uint32_t gsi, struct virtio_device **out);
extern const struct bus_ops virtio_mmio_ops; /* opaque: the virtio_device */

/* VM start: create the eventfds (ioeventfd per queue into the event loop,
 * irqfd for the interrupt). VM teardown: reset the device (waiting for its
 * in-flight I/O) and release them, before guest RAM goes away. */
int virtio_mmio_start(struct virtio_device *vdev);
void virtio_mmio_release(struct virtio_device *vdev);
/* VM destroy: release, call ops->release, free. */
void virtio_mmio_free(struct virtio_device *vdev);
/* Free a device never started, without ops->release (its opaque stays the
 * caller's). */
void virtio_mmio_discard(struct virtio_device *vdev);

/*
 * Snapshot. quiesce: with the event loop stopped, hand the device the queue
 * notifies the loop has not read yet and let it finish what it has in
 * flight. save: transport registers, queue state and the device's
 * own state into @node. load: the reverse on a freshly added device of a
 * restored VM (after virtio_mmio_start), checking every value as if the
 * guest had written it; activates the device if the driver had. 0 or
 * negative errno with a message in @err.
 */
void virtio_mmio_quiesce(struct virtio_device *vdev);
/* The VM stopped: the device's vm_stopped, under its lock. */
void virtio_mmio_vm_stopped(struct virtio_device *vdev);

/* Append lines on the device for microvm_describe(): its registers'
 * state and each ready queue (virtq_report), each line starting with
 * @indent. Takes the device lock. */
void virtio_mmio_report(struct virtio_device *vdev, const char *indent, struct textbuf *t);
/* The device ID a saved virtio node @node holds (restore picks the device
 * kind by it). 0 or -EINVAL + message. */
int virtio_mmio_saved_id(const void *fdt, int node, uint32_t *id, char *err, size_t errlen);
void virtio_mmio_save(struct virtio_device *vdev, struct st_writer *w, int node);
int virtio_mmio_load(struct virtio_device *vdev, const void *fdt, int node, char *err,
		     size_t errlen);

/* After pushing used buffers on queue @q: interrupt the driver if it wants
 * one. Lock held. */
void virtio_notify_used(struct virtio_device *vdev, uint16_t q);

/* The device changed its config space: bump ConfigGeneration and send a
 * config-change interrupt if the driver is active. Lock held. */
void virtio_config_changed(struct virtio_device *vdev);

/* From ops->load (restore, reset): a config change the driver is told of
 * (ConfigGeneration bumped, config-change interrupt) when the device
 * resumes. Lock held. */
void virtio_config_changed_at_load(struct virtio_device *vdev);

/* The guest broke the protocol (malformed ring): set DEVICE_NEEDS_RESET and
 * send a config-change interrupt. Lock held. */
void virtio_set_needs_reset(struct virtio_device *vdev, const char *why);

#endif
