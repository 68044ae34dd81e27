/*
 * Network backends: where the Ethernet frames of a virtio-net device
 * (lib/virtio/net.c) go on the host. One small frame interface, three
 * implementations:
 *
 *   tap (net_tap.c)        a TAP interface: opened by name through
 *                          /dev/net/tun (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
 *                          or an fd the embedder opened. With IFF_VNET_HDR
 *                          every frame carries a 12-byte virtio_net_hdr_v1,
 *                          so checksum/segmentation offloads pass through.
 *                          1 fd.
 *   stream (net_stream.c)  a connected SOCK_STREAM socket; each frame is
 *                          preceded by its length as a 4-byte big-endian
 *                          integer (QEMU's "-netdev stream"/"socket" framing,
 *                          which passt --fd speaks). No virtio header.
 *                          Non-blocking, with bounded buffers: at most
 *                          NET_STREAM_TX_BUF bytes of unsent output and
 *                          NET_STREAM_RX_BUF bytes of input. 1 fd.
 *   passt (net_passt.c)    user-mode networking: passt(1) started as a
 *                          child process on one end of a socketpair, and a
 *                          stream backend on the other end. 1 fd (our end of
 *                          the socket) + 1 pidfd when the kernel has
 *                          pidfd_open, and a child process, killed and
 *                          reaped by net_backend_close().
 *
 * Threading: a backend is not thread-safe; its user serialises every call
 * (the device holds its transport lock).
 */
#ifndef MICROVM_BACKEND_NET_H
#define MICROVM_BACKEND_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NET_VNET_HDR_LEN 12u  /* struct virtio_net_hdr_v1 (VERSION_1) */
#define NET_MAX_FRAME 65550u  /* largest Ethernet frame, without that header
			       * (virtio 1.2 5.1.6.3.1: 65562-byte buffers
			       * including the header) */
#define NET_MIN_FRAME 14u     /* an Ethernet header */
#define NET_STREAM_TX_BUF (2u * (4u + NET_MAX_FRAME))
#define NET_STREAM_RX_BUF (2u * (4u + NET_MAX_FRAME))

struct net_backend;

struct net_backend_ops {
	const char *name; /* "tap", "stream", "passt": static */
	/*
	 * Send one frame (@iov, @n entries, @len bytes in all; with the
	 * virtio header first if the backend carries it). 0: sent or queued
	 * whole; -EAGAIN: nothing taken, try again once net_backend_events()
	 * says the fd is writable; another negative errno: the frame is lost
	 * (the backend may be dead, see net_backend_dead()).
	 */
	int (*send)(struct net_backend *b, const struct iovec *iov, int n, size_t len);
	/* Write queued output. 0 when nothing is left, -EAGAIN, or an error. */
	int (*flush)(struct net_backend *b);
	/*
	 * The next received frame, without consuming it: its length (with the
	 * virtio header if carried) and *@frame pointing at it, valid until
	 * consume() or close; -EAGAIN if no whole frame is available now;
	 * -EPIPE (peer closed) or another negative errno if the backend is
	 * dead. Never blocks; reads at most one buffer's worth ahead.
	 */
	ssize_t (*peek)(struct net_backend *b, const uint8_t **frame);
	void (*consume)(struct net_backend *b); /* drop the frame peek() gave */
	/* Whether output is waiting for the fd to become writable. */
	bool (*tx_pending)(const struct net_backend *b);
	void (*close)(struct net_backend *b); /* free everything */
};

struct net_backend {
	const struct net_backend_ops *ops;
	int fd;        /* the fd to poll (-1 once dead and closed) */
	bool vnet_hdr; /* frames carry a struct virtio_net_hdr_v1 */
	bool dead;     /* peer gone or a hard error: nothing more will come */
	pid_t child;   /* passt: its process (0 = none), killed and reaped by
			* net_backend_close() */
	int pidfd;     /* passt: pidfd_open() of it, or -1 */
};

/* "tap", "stream" or "passt" (static). */
const char *net_backend_name(const struct net_backend *b);

/*
 * TAP by name (@fd < 0: open /dev/net/tun and attach to interface @name,
 * which must exist unless the caller may create it) or by fd (@fd adopted:
 * closed on error too; @name ignored). A given fd must be a TAP device
 * (TUNGETIFF); it carries virtio headers if it was set up with
 * IFF_VNET_HDR. The fd is made non-blocking. 0, or a negative errno with a
 * message in @err.
 */
int net_tap_open(const char *name, int fd, struct net_backend **out, char *err, size_t errlen);

/* Tell a TAP with virtio headers which offloads the guest accepts
 * (TUNSETOFFLOAD TUN_F_* bits). No-op for other backends. 0 or -errno. */
int net_tap_set_offload(struct net_backend *b, unsigned int tun_flags);

/*
 * Stream backend over the connected SOCK_STREAM socket @fd (adopted: closed
 * on error too). Uses MSG_DONTWAIT, so the fd's own O_NONBLOCK flag is left
 * as it is. 0, -EINVAL (not a stream socket) or -ENOMEM, message in @err.
 */
int net_stream_open(int fd, struct net_backend **out, char *err, size_t errlen);

/* A port forward for passt: -t (TCP) or -u (UDP) HOST:GUEST. */
struct net_port_fwd {
	bool udp;
	uint16_t host_port, guest_port;
};

/*
 * Find the passt executable: @path if it contains a '/', else @path (NULL =
 * "passt") searched on $PATH. Writes the full path to @out (@outlen bytes).
 * 0, -ENOENT (not found), -EACCES (not executable) with a message in @err.
 */
int net_passt_find(const char *path, char *out, size_t outlen, char *err, size_t errlen);

/*
 * Start passt (@path as net_passt_find() takes it) in the foreground,
 * quiet, with --fd on one end of a socketpair and the port forwards
 * @fwds[@n]; wait until it reports it is initialised (its --pid file, a
 * pipe here) or exits. The child gets PR_SET_PDEATHSIG(SIGKILL), every fd
 * but its socket closed-on-exec, default signal handling, and its stderr in
 * a memfd whose text becomes the error message if it fails to start. It
 * also exits by itself when our end of the socket closes (--fd implies
 * --one-off). 0, or a negative errno with a message in @err (-ENOENT: not
 * found; -EINVAL: it exited during start-up, e.g. bad arguments or a port
 * already in use; -ETIMEDOUT).
 */
int net_passt_open(const char *path, const struct net_port_fwd *fwds, uint32_t n,
		   struct net_backend **out, char *err, size_t errlen);
/* Close @b (NULL-safe): for passt, SIGKILL the child and reap it. */
void net_backend_close(struct net_backend *b);

#endif
