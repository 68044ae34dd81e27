/*
 * Stream network backend: Ethernet frames over a connected SOCK_STREAM
 * socket, each preceded by its length (4 bytes, big-endian), as QEMU's
 * stream netdev and passt --fd frame them.
 *
 * Never blocks: every send/recv uses MSG_DONTWAIT. Output the socket does
 * not take is kept in a buffer of NET_STREAM_TX_BUF bytes (two largest
 * frames); a frame that does not fit is refused with -EAGAIN, so the device
 * leaves it in its queue until the socket drains. Input is read in chunks
 * into a buffer of NET_STREAM_RX_BUF bytes and handed out one frame at a
 * time; nothing more is read while a whole frame waits there.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/net.h"
#include "errbuf.h"

#define MAX_IOV 1024 /* IOV_MAX on Linux */

struct net_stream {
	struct net_backend b;
	uint8_t *tx;          /* unsent output: tx[thead, thead + tlen) */
	uint32_t thead, tlen;
	uint8_t *rx;          /* input read ahead: rx[rhead, rhead + rlen) */
	uint32_t rhead, rlen;
	uint32_t flen;        /* length of the whole frame at rhead + 4, or 0 */
	struct iovec iov[MAX_IOV];
};

static void mark_dead(struct net_stream *s)
{
	s->b.dead = true;
}

static int stream_flush(struct net_backend *b)
{
	struct net_stream *s = (struct net_stream *)b;
	while (s->tlen) {
		ssize_t n = send(b->fd, s->tx + s->thead, s->tlen, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -EAGAIN;
		if (n <= 0) {
			int e = n < 0 ? errno : EPIPE;
			mark_dead(s);
			s->thead = s->tlen = 0;
			return -e;
		}
		s->thead += (uint32_t)n;
		s->tlen -= (uint32_t)n;
	}
	s->thead = 0;
	return 0;
}

/* Append bytes [@skip, @total) of prefix + iov to the output buffer. */
static void tx_append(struct net_stream *s, const uint8_t pfx[4], const struct iovec *iov,
		      int n, size_t skip)
{
	if (s->thead && s->thead + s->tlen + 4 + NET_MAX_FRAME + NET_VNET_HDR_LEN >
			       NET_STREAM_TX_BUF) {
		memmove(s->tx, s->tx + s->thead, s->tlen);
		s->thead = 0;
	}
	uint8_t *dst = s->tx + s->thead + s->tlen;
	size_t pos = 0;
	for (int i = -1; i < n; i++) {
		const uint8_t *p = i < 0 ? pfx : iov[i].iov_base;
		size_t len = i < 0 ? 4 : iov[i].iov_len;
		if (pos + len <= skip) {
			pos += len;
			continue;
		}
		size_t from = skip > pos ? skip - pos : 0;
		memcpy(dst, p + from, len - from);
		dst += len - from;
		s->tlen += (uint32_t)(len - from);
		pos += len;
	}
}

static int stream_send(struct net_backend *b, const struct iovec *iov, int n, size_t len)
{
	struct net_stream *s = (struct net_stream *)b;
	if (b->dead)
		return -EPIPE;
	if (len == 0 || len > NET_MAX_FRAME || n < 0)
		return -EINVAL;
	int r = s->tlen ? stream_flush(b) : 0;
	if (r < 0 && r != -EAGAIN)
		return r;
	if (s->tlen + 4 + len > NET_STREAM_TX_BUF)
		return -EAGAIN;
	uint32_t be = htobe32((uint32_t)len);
	size_t sent = 0;
	if (s->tlen == 0 && n < MAX_IOV) {
		s->iov[0] = (struct iovec){ &be, 4 };
		memcpy(s->iov + 1, iov, (size_t)n * sizeof(*iov));
		struct msghdr mh = { .msg_iov = s->iov, .msg_iovlen = (size_t)n + 1 };
		ssize_t w;
		do
			w = sendmsg(b->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			int e = errno;
			mark_dead(s);
			return -e;
		}
		sent = w > 0 ? (size_t)w : 0;
	}
	if (sent < 4 + len)
		tx_append(s, (const uint8_t *)&be, iov, n, sent);
	return 0;
}

static bool stream_tx_pending(const struct net_backend *b)
{
	return ((const struct net_stream *)b)->tlen != 0;
}

static ssize_t stream_peek(struct net_backend *b, const uint8_t **frame)
{
	struct net_stream *s = (struct net_stream *)b;
	for (;;) {
		if (s->rlen >= 4) {
			uint32_t be;
			memcpy(&be, s->rx + s->rhead, 4);
			uint32_t len = be32toh(be);
			if (len < NET_MIN_FRAME || len > NET_MAX_FRAME) {
				mark_dead(s); /* the framing is lost for good */
				return -EBADMSG;
			}
			if (s->rlen >= 4 + len) {
				s->flen = len;
				*frame = s->rx + s->rhead + 4;
				return (ssize_t)len;
			}
		}
		if (b->dead)
			return -EPIPE;
		/* Keep room for a whole frame after the partial one. */
		if (s->rhead && s->rhead + s->rlen > NET_STREAM_RX_BUF / 2) {
			memmove(s->rx, s->rx + s->rhead, s->rlen);
			s->rhead = 0;
		}
		uint32_t room = NET_STREAM_RX_BUF - s->rhead - s->rlen;
		ssize_t n = recv(b->fd, s->rx + s->rhead + s->rlen, room, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -EAGAIN;
		if (n <= 0) {
			int e = n < 0 ? errno : EPIPE;
			mark_dead(s);
			return -e;
		}
		s->rlen += (uint32_t)n;
	}
}

static void stream_consume(struct net_backend *b)
{
	struct net_stream *s = (struct net_stream *)b;
	if (!s->flen)
		return;
	s->rhead += 4 + s->flen;
	s->rlen -= 4 + s->flen;
	s->flen = 0;
	if (s->rlen == 0)
		s->rhead = 0;
}

static void stream_close(struct net_backend *b)
{
	struct net_stream *s = (struct net_stream *)b;
	if (b->fd >= 0)
		close(b->fd);
	free(s->tx);
	free(s->rx);
	free(s);
}

static const struct net_backend_ops stream_ops = {
	.name = "stream",
	.send = stream_send,
	.flush = stream_flush,
	.peek = stream_peek,
	.consume = stream_consume,
	.tx_pending = stream_tx_pending,
	.close = stream_close,
};

int net_stream_open(int fd, struct net_backend **out, char *err, size_t errlen)
{
	int type = 0;
	socklen_t tl = sizeof(type);
	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		if (fd >= 0)
			close(fd);
		return errbuf_fail(err, errlen, -EINVAL, "fd %d is not a stream socket", fd);
	}
	struct net_stream *s = calloc(1, sizeof(*s));
	if (s) {
		s->tx = malloc(NET_STREAM_TX_BUF);
		s->rx = malloc(NET_STREAM_RX_BUF);
	}
	if (!s || !s->tx || !s->rx) {
		if (s) {
			free(s->tx);
			free(s->rx);
		}
		free(s);
		close(fd);
		return errbuf_fail(err, errlen, -ENOMEM, "out of memory");
	}
	s->b.ops = &stream_ops;
	s->b.fd = fd;
	s->b.pidfd = -1;
	*out = &s->b;
	return 0;
}
