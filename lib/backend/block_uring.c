/*
 * The io_uring block backend: one ring per disk, readv/writev/fsync issued
 * straight on the caller's iovecs (guest memory), up to @depth requests in
 * flight. The ring signals completions on an eventfd registered with
 * io_uring_register_eventfd(); the owner polls that fd and calls reap().
 * A short transfer is resubmitted for the rest; a transfer that makes no
 * progress (end of file) fails with -EIO.
 */
#include "backend/block.h"

#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* drain(): give up after this many consecutive failed waits (never seen in
 * practice; it only keeps a broken ring from spinning forever). */
#define DRAIN_MAX_ERRORS 1000

struct uring {
	struct io_uring ring;
	/* drain(): finish short transfers instead of resubmitting the rest
	 * (the memory behind the iovecs may be going away). */
	bool draining;
};

static int uring_init(struct blk_backend *be)
{
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	int r = io_uring_queue_init(be->depth, &u->ring, 0);
	if (r < 0) {
		free(u);
		return r;
	}
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		r = -errno;
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	r = io_uring_register_eventfd(&u->ring, efd);
	if (r < 0) {
		close(efd);
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	be->priv = u;
	be->event_fd = efd;
	return 0;
}

/* Prepare an SQE for what is left of @io. 0 or -EBUSY (no free SQE). */
static int queue_io(struct blk_backend *be, struct blk_io *io)
{
	struct uring *u = be->priv;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	uint32_t n = io->niov - io->first;
	if (n > IOV_MAX)
		n = IOV_MAX; /* the rest goes as a continuation */
	uint64_t at = io->offset + io->done;
	switch (io->op) {
	case BLK_OP_READ:
		io_uring_prep_readv(sqe, be->fd, io->iov + io->first, n, at);
		break;
	case BLK_OP_WRITE:
		io_uring_prep_writev(sqe, be->fd, io->iov + io->first, n, at);
		break;
	case BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, be->fd, IORING_FSYNC_DATASYNC);
		break;
	}
	io_uring_sqe_set_data(sqe, io);
	return 0;
}

static void uring_commit(struct blk_backend *be)
{
	struct uring *u = be->priv;
	/* On failure (-EAGAIN, -EBUSY, -EINTR) the SQEs stay in the ring and
	 * go with the next commit, reap or drain. */
	if (io_uring_sq_ready(&u->ring) > 0)
		(void)io_uring_submit(&u->ring);
}

static int uring_submit(struct blk_backend *be, struct blk_io *io)
{
	if (io->op != BLK_OP_READ && io->op != BLK_OP_WRITE && io->op != BLK_OP_FLUSH)
		return -EINVAL;
	if (be->in_flight >= be->depth)
		return -EBUSY;
	io->done = 0;
	io->first = 0;
	io->result = 0;
	blk_io_advance(io, 0); /* skip leading empty iovecs */
	if (io->op != BLK_OP_FLUSH && io->done >= io->len) {
		/* Nothing to transfer: complete now (readv of nothing would look
		 * like end of file). */
		be->complete(be->owner, io);
		return 0;
	}
	int r = queue_io(be, io);
	if (r < 0)
		return r;
	be->in_flight++;
	return 0;
}

/* Account one CQE for @io. Returns true if @io finished (complete() was
 * called), false if the rest was queued again. */
static bool handle_cqe(struct blk_backend *be, struct blk_io *io, int res)
{
	if (io->op == BLK_OP_FLUSH || res < 0) {
		io->result = res < 0 ? res : 0;
	} else if (res == 0) {
		io->result = -EIO; /* end of file before @len bytes */
	} else {
		struct uring *u = be->priv;
		blk_io_advance(io, (uint64_t)res);
		if (io->done < io->len && io->first < io->niov && !u->draining &&
		    queue_io(be, io) == 0)
			return false;
		io->result = io->done >= io->len ? 0 : -EIO;
	}
	be->in_flight--;
	be->complete(be->owner, io);
	return true;
}

static unsigned uring_reap(struct blk_backend *be)
{
	struct uring *u = be->priv;
	uint64_t count;
	ssize_t rd = read(be->event_fd, &count, sizeof(count)); /* clear: re-armed by new CQEs */
	(void)rd;
	unsigned done = 0;
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
		struct blk_io *io = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&u->ring, cqe);
		if (io && handle_cqe(be, io, res))
			done++;
	}
	uring_commit(be); /* continuations, and anything a failed commit left */
	return done;
}

static void uring_drain(struct blk_backend *be)
{
	struct uring *u = be->priv;
	int errors = 0;
	u->draining = true;
	while (be->in_flight > 0) {
		/* Submits what is still queued, then waits for a CQE. */
		int r = io_uring_submit_and_wait(&u->ring, 1);
		unsigned n = uring_reap(be);
		if (n > 0 || r == -EINTR)
			errors = 0;
		else if (r < 0 && ++errors >= DRAIN_MAX_ERRORS)
			break;
	}
	u->draining = false;
}

static void uring_destroy(struct blk_backend *be)
{
	struct uring *u = be->priv;
	if (!u)
		return;
	io_uring_queue_exit(&u->ring); /* also drops the eventfd registration */
	if (be->event_fd >= 0)
		close(be->event_fd);
	be->event_fd = -1;
	free(u);
	be->priv = NULL;
}

const struct blk_backend_ops blk_backend_uring_ops = {
	.name = "io_uring",
	.init = uring_init,
	.submit = uring_submit,
	.commit = uring_commit,
	.reap = uring_reap,
	.drain = uring_drain,
	.destroy = uring_destroy,
};
