/*
 * virtio-vsock (virtio 1.2 section 5.10): stream sockets between the guest
 * and the host (CID 2), bridged to host-side AF_UNIX stream sockets.
 *
 * The engine below works on bare struct virtq pointers, an event loop and a
 * mutex it is given, so the unit tests drive it over a guest memory of their
 * own without KVM or the loop thread (they poll the loop's epoll fd and call
 * the handlers themselves). The transport glue in vsock.c connects it to
 * virtio-mmio.
 */
#ifndef MICROVM_VIRTIO_VSOCK_H
#define MICROVM_VIRTIO_VSOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evloop;
struct dev_host;
struct virtio_device;
struct virtio_device_ops;
struct virtq;

#define VIRTIO_ID_VSOCK 19

#define VSOCK_RXQ 0 /* device -> driver packets */
#define VSOCK_TXQ 1 /* driver -> device packets */
#define VSOCK_EVQ 2 /* device events */
#define VSOCK_NUM_QUEUES 3

#define VSOCK_CFG_SIZE 8 /* le64 guest_cid */

#define VSOCK_HOST_CID 2u

/* Packet header (section 5.10.6), little-endian, 44 bytes. */
#define VSOCK_HDR_SIZE 44u
#define VSOCK_TYPE_STREAM 1u
#define VSOCK_OP_INVALID 0u
#define VSOCK_OP_REQUEST 1u
#define VSOCK_OP_RESPONSE 2u
#define VSOCK_OP_RST 3u
#define VSOCK_OP_SHUTDOWN 4u
#define VSOCK_OP_RW 5u
#define VSOCK_OP_CREDIT_UPDATE 6u
#define VSOCK_OP_CREDIT_REQUEST 7u
#define VSOCK_SHUTDOWN_RCV 1u  /* the sender will receive no more data */
#define VSOCK_SHUTDOWN_SEND 2u /* the sender will send no more data */

#define VSOCK_EVENT_TRANSPORT_RESET 0u /* struct virtio_vsock_event { le32 id; } */

/* Limits. */
#define VSOCK_MAX_PKT (64u * 1024u)     /* largest payload taken or sent */
#define VSOCK_BUF_ALLOC (256u * 1024u)  /* our receive buffer per stream */
#define VSOCK_CREDIT_LOW (64u * 1024u)  /* send CREDIT_UPDATE below this */
#define VSOCK_MAX_CONNS 1024u           /* streams + handshaking clients */
#define VSOCK_LINE_MAX 32u              /* "CONNECT <port>\n" */
#define VSOCK_RST_QUEUE 256u            /* RST replies to stray packets */
#define VSOCK_PORT_FIRST 1024u          /* first ephemeral host port */
#define VSOCK_UDS_PATH_MAX 96u          /* strlen; "_<port>" must still fit */

struct vsock_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port;
	uint32_t len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
};

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t out[VSOCK_HDR_SIZE]);
void vsock_hdr_decode(const uint8_t in[VSOCK_HDR_SIZE], struct vsock_hdr *h);

/* What the engine is attached to. */
struct vsock_env {
	const struct dev_host *host; /* logs, the VM-stopped check; NULL in tests */
	struct evloop *loop;    /* host fds are watched here (borrowed) */
	pthread_mutex_t *lock;  /* serialises the engine (the transport lock) */
	void (*used)(void *opaque, uint16_t q);         /* buffers pushed on q */
	void (*broken)(void *opaque, const char *why);  /* malformed ring */
	void *opaque;
};

struct virtio_vsock;

/* A stopped engine; @uds_path copied (NULL = no Unix socket bridge). NULL if
 * out of memory. */
struct virtio_vsock *virtio_vsock_new(const struct vsock_env *env, uint64_t guest_cid,
				      const char *uds_path);

/* Create the listening socket on uds_path (a socket file already there is
 * replaced; anything else there is an error). No-op without uds_path. 0 or
 * negative errno with a message in @err. */
int virtio_vsock_listen(struct virtio_vsock *v, char *err, size_t errlen);

/* Close everything, remove the socket file, free. Waits for
 * virtio_vsock_connect() callers to leave. Lock not held. NULL-safe. */
void virtio_vsock_free(struct virtio_vsock *v);

/* Lock held. The driver is ready: use these queues (all ready), watch the
 * listening socket. Does not process the queues (notify them). */
void virtio_vsock_start(struct virtio_vsock *v, struct virtq *rx, struct virtq *tx,
			struct virtq *ev);
/* Lock held. Device reset: close every connection (no packets), fail
 * pending connects with -ECONNRESET, stop watching the listening socket. */
void virtio_vsock_stop(struct virtio_vsock *v);
/* Lock held. The driver notified queue @q. */
void virtio_vsock_notify(struct virtio_vsock *v, uint16_t q);

/* Lock NOT held (taken inside). Close every host connection and queue a
 * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET for the guest, delivered once it has an
 * event buffer. Used after snapshot restore. */
void virtio_vsock_transport_reset(struct virtio_vsock *v);

/*
 * Lock NOT held. Open a stream to guest port @port: a socketpair whose one
 * end the device keeps; REQUEST to the guest, then wait for RESPONSE (returns
 * the other end, close-on-exec, blocking), RST (-ECONNREFUSED), @timeout_ms
 * (-ETIMEDOUT; -1 = no limit; the request is cancelled, with an RST if the
 * guest saw it), a device reset or the VM stopping (-ECONNRESET), or
 * -EMFILE/-ENOMEM... @release (may be NULL) is unlocked once the request is
 * registered, after which virtio_vsock_free() waits for this call to end.
 */
int virtio_vsock_connect(struct virtio_vsock *v, uint32_t port, int timeout_ms,
			 pthread_mutex_t *release);

/* Lock NOT held. The guest CID (config space), and replacing the Unix socket
 * path (NULL = none) on a stopped engine; closes the old listener. */
void virtio_vsock_set_cid(struct virtio_vsock *v, uint64_t cid);
int virtio_vsock_set_uds_path(struct virtio_vsock *v, const char *uds_path);

/* ------------------------------------------------ on the virtio transport */

/* Its transport ops (one row of lib/vm_devices.c). */
extern const struct virtio_device_ops virtio_vsock_ops;

/* A device engine for the VM @host (borrowed), listening on @uds_path. 0 or
 * negative errno + message. Add it to the VM, then attach its transport. */
int virtio_vsock_device_new(const struct dev_host *host, uint64_t cid, const char *uds_path,
			    struct virtio_vsock **out, char *err, size_t errlen);
void virtio_vsock_attach(struct virtio_vsock *v, struct virtio_device *vdev);
bool virtio_vsock_attached(const struct virtio_vsock *v);
/* A device kept from a failed start attempt takes the current settings. */
int virtio_vsock_reconfigure(struct virtio_vsock *v, uint64_t cid, const char *uds_path,
			     char *err, size_t errlen);
/* Restore: the CID and socket path (NULL = none; points into @fdt) its save
 * wrote into @node. 0 or -EINVAL + message. */
int virtio_vsock_config_from_state(const void *fdt, int node, uint64_t *cid,
				   const char **uds_path, char *err, size_t errlen);

/* Introspection for tests (lock held). */
uint32_t virtio_vsock_nr_conns(const struct virtio_vsock *v);
/* Events watched for the stream (local port, peer port), or -1 if unknown. */
int virtio_vsock_conn_events(const struct virtio_vsock *v, uint32_t local, uint32_t peer);
/* Guest bytes buffered for the host fd of that stream, or -1. */
long virtio_vsock_conn_buffered(const struct virtio_vsock *v, uint32_t local, uint32_t peer);


#endif
