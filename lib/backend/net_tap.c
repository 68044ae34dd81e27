/*
 * TAP network backend: one read() is one frame, one writev() is one frame
 * (IFF_TAP | IFF_NO_PI), each with a 12-byte struct virtio_net_hdr_v1 in
 * front when the device was set up with IFF_VNET_HDR (TUNSETVNETHDRSZ 12).
 * The fd is non-blocking; a frame the kernel does not take (EAGAIN) stays
 * with the caller.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend/net.h"
#include "errbuf.h"

#define MAX_IOV 1024
#define RX_BUF (NET_VNET_HDR_LEN + NET_MAX_FRAME)

struct net_tap {
	struct net_backend b;
	uint8_t *buf;  /* the frame read ahead, and the gather buffer for sends
			* of more than MAX_IOV pieces */
	uint32_t flen; /* bytes of the frame in buf, 0 = none */
	uint8_t *gather;
};

static int tap_send(struct net_backend *b, const struct iovec *iov, int n, size_t len)
{
	struct net_tap *t = (struct net_tap *)b;
	if (b->dead)
		return -EPIPE;
	if (n < 0 || len > RX_BUF)
		return -EINVAL;
	struct iovec one;
	if (n > MAX_IOV) { /* writev takes at most IOV_MAX pieces */
		size_t pos = 0;
		for (int i = 0; i < n; i++) {
			memcpy(t->gather + pos, iov[i].iov_base, iov[i].iov_len);
			pos += iov[i].iov_len;
		}
		one = (struct iovec){ t->gather, pos };
		iov = &one;
		n = 1;
	}
	ssize_t w;
	do
		w = writev(b->fd, iov, n);
	while (w < 0 && errno == EINTR);
	if (w >= 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return -EAGAIN;
	if (errno == EBADF || errno == EBADFD)
		b->dead = true;
	return -errno; /* e.g. EIO while the interface is down: frame lost */
}

static int tap_flush(struct net_backend *b)
{
	(void)b;
	return 0;
}

static bool tap_tx_pending(const struct net_backend *b)
{
	(void)b;
	return false;
}

static ssize_t tap_peek(struct net_backend *b, const uint8_t **frame)
{
	struct net_tap *t = (struct net_tap *)b;
	while (!t->flen) {
		if (b->dead)
			return -EPIPE;
		ssize_t n = read(b->fd, t->buf, RX_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -EAGAIN;
		if (n <= 0) {
			int e = n < 0 ? errno : EPIPE;
			b->dead = true;
			return -e;
		}
		t->flen = (uint32_t)n;
	}
	*frame = t->buf;
	return (ssize_t)t->flen;
}

static void tap_consume(struct net_backend *b)
{
	((struct net_tap *)b)->flen = 0;
}

static void tap_close(struct net_backend *b)
{
	struct net_tap *t = (struct net_tap *)b;
	if (b->fd >= 0)
		close(b->fd);
	free(t->buf);
	free(t->gather);
	free(t);
}

static const struct net_backend_ops tap_ops = {
	.name = "tap",
	.send = tap_send,
	.flush = tap_flush,
	.peek = tap_peek,
	.consume = tap_consume,
	.tx_pending = tap_tx_pending,
	.close = tap_close,
};

/* Attach to interface @name through /dev/net/tun. fd or negative errno. */
static int tap_attach(const char *name, char *err, size_t errlen)
{
	struct ifreq ifr;
	if (!name || !name[0] || strlen(name) >= sizeof(ifr.ifr_name))
		return errbuf_fail(err, errlen, -EINVAL, "TAP name must be 1..%zu bytes",
				   sizeof(ifr.ifr_name) - 1);
	if (if_nametoindex(name) == 0)
		return errbuf_fail(err, errlen, -ENODEV, "no network interface named %s", name);
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "/dev/net/tun: %s", strerror(e));
	}
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, name, strlen(name));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		close(fd);
		return errbuf_fail(err, errlen, -e, "TUNSETIFF %s: %s (not a TAP interface, or "
				   "in use, or no permission)", name, strerror(e));
	}
	return fd;
}

/* Check an embedder's fd is a usable TAP; whether it has vnet headers. */
static int tap_check_fd(int fd, bool *vnet, char *err, size_t errlen)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return errbuf_fail(err, errlen, -EINVAL, "fd %d is not a TUN/TAP device", fd);
	if (!(ifr.ifr_flags & IFF_TAP) || !(ifr.ifr_flags & IFF_NO_PI))
		return errbuf_fail(err, errlen, -EINVAL, "fd %d: not a TAP set up with IFF_NO_PI",
				   fd);
	*vnet = ifr.ifr_flags & IFF_VNET_HDR;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "fd %d: %s", fd, strerror(e));
	}
	return 0;
}

int net_tap_open(const char *name, int fd, struct net_backend **out, char *err, size_t errlen)
{
	bool vnet = true;
	int r = 0;
	if (fd < 0) {
		fd = tap_attach(name, err, errlen);
		if (fd < 0)
			return fd;
	} else {
		r = tap_check_fd(fd, &vnet, err, errlen);
	}
	int hdr = NET_VNET_HDR_LEN;
	if (r == 0 && vnet && ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)
		r = errbuf_fail(err, errlen, -errno, "TUNSETVNETHDRSZ: %s", strerror(errno));
	struct net_tap *t = r == 0 ? calloc(1, sizeof(*t)) : NULL;
	if (t) {
		t->buf = malloc(RX_BUF);
		t->gather = malloc(RX_BUF);
	}
	if (r == 0 && (!t || !t->buf || !t->gather)) {
		if (t) {
			free(t->buf);
			free(t->gather);
		}
		free(t);
		r = errbuf_fail(err, errlen, -ENOMEM, "out of memory");
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	t->b.ops = &tap_ops;
	t->b.fd = fd;
	t->b.vnet_hdr = vnet;
	t->b.pidfd = -1;
	*out = &t->b;
	return 0;
}

int net_tap_set_offload(struct net_backend *b, unsigned int tun_flags)
{
	if (b->ops != &tap_ops || !b->vnet_hdr)
		return 0;
	return ioctl(b->fd, TUNSETOFFLOAD, tun_flags) < 0 ? -errno : 0;
}
