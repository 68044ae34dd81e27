/*
 * The synchronous block backend (preadv/pwritev/fdatasync on the calling
 * thread, every request completed inside submit), plus what all backends
 * share: backend selection with fallback, and progress accounting.
 */
#include "backend/block.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

void blk_io_advance(struct blk_io *io, uint64_t n)
{
	io->done += n;
	while (n > 0 && io->first < io->niov) {
		struct iovec *v = &io->iov[io->first];
		if (n >= v->iov_len) {
			n -= v->iov_len;
			v->iov_len = 0;
			io->first++;
		} else {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			n = 0;
		}
	}
	/* Skip empty entries so @first always names bytes still to move. */
	while (io->first < io->niov && io->iov[io->first].iov_len == 0)
		io->first++;
}

int blk_sync_rw(int fd, struct blk_io *io)
{
	while (io->done < io->len) {
		if (io->first >= io->niov)
			return -EIO; /* iovecs shorter than @len: caller bug */
		uint32_t n = io->niov - io->first;
		if (n > IOV_MAX)
			n = IOV_MAX;
		off_t at = (off_t)(io->offset + io->done);
		ssize_t r = io->op == BLK_OP_READ ? preadv(fd, io->iov + io->first, (int)n, at)
						  : pwritev(fd, io->iov + io->first, (int)n, at);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO; /* end of file (image shrank) or no progress */
		blk_io_advance(io, (uint64_t)r);
	}
	return 0;
}

int blk_sync_flush(int fd)
{
	while (fdatasync(fd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* ------------------------------------------------------------ sync backend */

static int sync_init(struct blk_backend *be)
{
	be->event_fd = -1;
	be->priv = NULL;
	return 0;
}

static int sync_submit(struct blk_backend *be, struct blk_io *io)
{
	io->done = 0;
	io->first = 0;
	blk_io_advance(io, 0); /* skip leading empty iovecs */
	be->in_flight++;
	switch (io->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		io->result = blk_sync_rw(be->fd, io);
		break;
	case BLK_OP_FLUSH:
		io->result = blk_sync_flush(be->fd);
		break;
	default:
		io->result = -EINVAL;
		break;
	}
	be->in_flight--;
	be->complete(be->owner, io);
	return 0;
}

static void sync_commit(struct blk_backend *be)
{
	(void)be;
}

static unsigned sync_reap(struct blk_backend *be)
{
	(void)be;
	return 0;
}

static void sync_drain(struct blk_backend *be)
{
	(void)be; /* nothing is ever in flight between calls */
}

static void sync_destroy(struct blk_backend *be)
{
	(void)be;
}

const struct blk_backend_ops blk_backend_sync_ops = {
	.name = "sync",
	.init = sync_init,
	.submit = sync_submit,
	.commit = sync_commit,
	.reap = sync_reap,
	.drain = sync_drain,
	.destroy = sync_destroy,
};

/* ----------------------------------------------------------------- common */

int blk_backend_open(struct blk_backend *be, int fd, unsigned depth, bool force_sync,
		     blk_complete_fn complete, void *owner, int *fallback_err)
{
	if (fallback_err)
		*fallback_err = 0;
	memset(be, 0, sizeof(*be));
	be->fd = fd;
	be->depth = depth ? depth : 1;
	be->event_fd = -1;
	be->complete = complete;
	be->owner = owner;
	if (!force_sync) {
		be->ops = &blk_backend_uring_ops;
		int r = be->ops->init(be);
		if (r == 0)
			return 0;
		if (fallback_err)
			*fallback_err = r;
		be->event_fd = -1;
		be->priv = NULL;
	}
	be->ops = &blk_backend_sync_ops;
	return be->ops->init(be);
}

void blk_backend_close(struct blk_backend *be)
{
	if (!be->ops)
		return;
	be->ops->drain(be);
	be->ops->destroy(be);
	be->ops = NULL;
	be->event_fd = -1;
	be->priv = NULL;
}
