/*
 * virtio-net (virtio 1.2 section 5.1): one receive/transmit queue pair, no
 * control queue, over a network backend (lib/backend/net.h).
 *
 * Like vsock, the engine works on bare struct virtq pointers, an event loop
 * and a lock it is given, so the unit tests drive it over a guest memory of
 * their own (a manual loop they run with evloop_poll()); the transport glue in net.c connects it to virtio-mmio.
 */
#ifndef MICROVM_VIRTIO_NET_H
#define MICROVM_VIRTIO_NET_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/net.h"

struct dev_host;
struct evloop;
struct virtio_device;
struct virtio_device_ops;
struct virtq;

#define VIRTIO_ID_NET 1

#define NET_RXQ 0
#define NET_TXQ 1
#define NET_NUM_QUEUES 2

/* Feature bits (section 5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16

#define VIRTIO_NET_S_LINK_UP 1

/* struct virtio_net_hdr_v1 (12 bytes, little-endian). */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_GSO_NONE 0
#define NET_HDR_FLAGS 0
#define NET_HDR_GSO_TYPE 1
#define NET_HDR_NUM_BUFFERS 10

/* Config space: mac[6], le16 status, le16 max_virtqueue_pairs. */
#define NET_CFG_MAC 0
#define NET_CFG_STATUS 6
#define NET_CFG_MAX_VQ_PAIRS 8
#define NET_CFG_SIZE 10

/* Frames moved per event-loop wakeup before the device yields to others
 * (it comes back through its own queue notification). */
#define NET_BATCH 64u

/* The backend kinds (= MICROVM_NET_BACKEND_*). */
#define NET_BE_TAP_NAME 1u
#define NET_BE_TAP_FD 2u
#define NET_BE_STREAM_FD 3u
#define NET_BE_USER 4u

/* A device's configuration, all of it: what a snapshot saves and restore
 * rebuilds the device (and its backend) from. Strings and the forward
 * table are owned by whoever holds the struct. */
struct net_dev_config {
	uint32_t backend; /* NET_BE_* */
	uint8_t mac[6];
	bool link_up;
	char *tap_name;   /* NET_BE_TAP_NAME */
	char *passt_path; /* NET_BE_USER; NULL = "passt" on PATH */
	struct net_port_fwd *fwds;
	uint32_t n_fwds;
};

/* Deep copy (0 or -ENOMEM) and free of the strings/table. */
int net_dev_config_copy(struct net_dev_config *dst, const struct net_dev_config *src);
void net_dev_config_clear(struct net_dev_config *c);

struct net_counters {
	uint64_t rx_packets, rx_bytes, rx_dropped;
	uint64_t tx_packets, tx_bytes, tx_dropped, tx_malformed;
};

/* What the engine is attached to. */
struct net_env {
	const struct dev_host *host; /* logs; NULL in tests */
	struct evloop *loop;         /* the backend fd is watched here */
	pthread_mutex_t *lock;       /* serialises the engine */
	void (*used)(void *opaque, uint16_t q);        /* buffers pushed on q */
	void (*broken)(void *opaque, const char *why); /* malformed ring */
	void (*config_changed)(void *opaque);          /* status changed */
	void (*kick)(void *opaque, uint16_t q);        /* come back later for q;
							* NULL: no batch limit */
	void *opaque;
};

struct virtio_net;

/* A stopped engine over backend @be (adopted, also on failure) with
 * configuration @cfg (copied). NULL if out of memory. */
struct virtio_net *virtio_net_new(const struct net_env *env, struct net_backend *be,
				  const struct net_dev_config *cfg);
/* Close the backend (passt: killed and reaped) and free. NULL-safe. Lock not
 * held. */
void virtio_net_free(struct virtio_net *n);

/* Feature bits to offer: offloads only if the backend carries headers. */
uint64_t virtio_net_features(const struct virtio_net *n);

/* Lock held. The driver is ready with @features: use these queues. */
void virtio_net_start(struct virtio_net *n, struct virtq *rx, struct virtq *tx,
		      uint64_t features);
/* Lock held. Device reset: stop using the queues and watching the backend. */
void virtio_net_stop(struct virtio_net *n);
/* Lock held. The driver notified queue @q. */
void virtio_net_notify(struct virtio_net *n, uint16_t q);
/* Lock held. Link up (1) or down (0); a change is announced to a driver that
 * negotiated VIRTIO_NET_F_STATUS. */
void virtio_net_set_link(struct virtio_net *n, bool up);
/* Lock held. */
void virtio_net_counters(const struct virtio_net *n, struct net_counters *out);
bool virtio_net_link(const struct virtio_net *n);
const struct net_dev_config *virtio_net_config(const struct virtio_net *n);
const struct net_backend *virtio_net_backend(const struct virtio_net *n);
/* Lock held. Config space read, @off + @len <= NET_CFG_SIZE (a read of the
 * status field ends a pending link flap). */
void virtio_net_config_read(struct virtio_net *n, uint32_t off, void *data, uint32_t len);
/* Lock held. The next read of the status field shows the link down, and
 * the link is up again right after it (a config change): a link flap. */
void virtio_net_begin_flap(struct virtio_net *n);
/* A restored clone: its load (net_load) starts a link flap if the link is
 * up and the driver negotiated VIRTIO_NET_F_STATUS. */
void virtio_net_flap_on_load(struct virtio_net *n);
/* Events the backend fd is watched for now (tests). */
uint32_t virtio_net_watched(const struct virtio_net *n);

/* ------------------------------------------------ on the virtio transport */

extern const struct virtio_device_ops virtio_net_ops;

/* A device for the VM @host (borrowed) over @be (adopted). 0 or -ENOMEM +
 * message. Add it to the VM, set vdev->features, then attach. */
int virtio_net_device_new(const struct dev_host *host, struct net_backend *be,
			  const struct net_dev_config *cfg, struct virtio_net **out, char *err,
			  size_t errlen);
void virtio_net_attach(struct virtio_net *n, struct virtio_device *vdev);
/* Restore: the configuration its save wrote into @node (strings point into
 * @fdt; @fwds room for NET_MAX_FWDS entries). 0 or -EINVAL + message. */
#define NET_MAX_FWDS 64u
int virtio_net_config_from_state(const void *fdt, int node, struct net_dev_config *cfg,
				 struct net_port_fwd *fwds, char *err, size_t errlen);

#endif
