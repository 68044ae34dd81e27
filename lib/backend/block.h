/*
 * Block I/O backends: how a disk image's reads, writes and flushes are
 * carried out on the host. The virtio-blk device (lib/virtio/blk.c) is the
 * only user; it hands over iovecs that point straight into guest memory, so
 * data is never copied by the VMM.
 *
 * Two implementations:
 *   io_uring (block_uring.c)  many requests in flight; readv/writev/fsync go
 *                             to the kernel and their completions are reaped
 *                             when the ring's registered eventfd (event_fd)
 *                             becomes readable.
 *   sync (block_sync.c)       preadv/pwritev/fdatasync on the calling thread;
 *                             every request completes inside submit().
 *
 * Threading: a backend is not thread-safe; its user serialises every call
 * (the device holds its transport lock).
 */
#ifndef MICROVM_BACKEND_BLOCK_H
#define MICROVM_BACKEND_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum blk_op {
	BLK_OP_READ,  /* fill iov from the image at offset */
	BLK_OP_WRITE, /* write iov to the image at offset */
	BLK_OP_FLUSH, /* make completed writes stable (fdatasync) */
};

/*
 * One I/O request. The caller fills op/iov/niov/offset/len and keeps the
 * structure (and the iovec array) alive and untouched until it completes.
 * The backend may rewrite iov[] while it resubmits the rest of a short
 * transfer.
 */
struct blk_io {
	enum blk_op op;
	struct iovec *iov;
	uint32_t niov;
	uint64_t offset; /* bytes from the start of the image */
	uint64_t len;    /* total bytes of iov[] */
	/* Backend state. */
	uint64_t done;   /* bytes transferred so far */
	uint32_t first;  /* first iov[] entry not fully transferred */
	/* Result, valid in the completion callback: 0 (all @len bytes
	 * transferred) or a negative errno; a transfer that hits the end of the
	 * file before @len bytes is -EIO. */
	int result;
};

struct blk_backend;

/* Called once per request when it finishes (see the ops below for when). */
typedef void (*blk_complete_fn)(void *owner, struct blk_io *io);

struct blk_backend_ops {
	const char *name; /* "io_uring" or "sync": static, reported to users */
	/* Prepare @be (fd, depth, complete, owner already set). 0 or -errno. */
	int (*init)(struct blk_backend *be);
	/*
	 * Start @io. Returns 0 when the request was accepted: complete() is then
	 * called for it exactly once, possibly before submit returns (sync), or
	 * a negative errno when it was not (complete() is not called). At most
	 * @depth requests may be in flight.
	 */
	int (*submit)(struct blk_backend *be, struct blk_io *io);
	/* Hand the requests accepted since the last call to the kernel. */
	void (*commit)(struct blk_backend *be);
	/* Call complete() for every finished request, without blocking.
	 * Returns how many finished. */
	unsigned (*reap)(struct blk_backend *be);
	/* Block until no request is in flight, calling complete() for each. */
	void (*drain)(struct blk_backend *be);
	/* Release what init() set up. Nothing may be in flight (drain first). */
	void (*destroy)(struct blk_backend *be);
};

struct blk_backend {
	const struct blk_backend_ops *ops;
	int fd;             /* the image, borrowed */
	unsigned depth;     /* most requests in flight at once */
	unsigned in_flight; /* accepted and not completed yet */
	/* Readable when reap() has something to do; -1 for backends that
	 * complete everything inside submit(). */
	int event_fd;
	blk_complete_fn complete;
	void *owner;
	void *priv;
};

extern const struct blk_backend_ops blk_backend_uring_ops;
extern const struct blk_backend_ops blk_backend_sync_ops;

/*
 * Set up @be on the image @fd: io_uring unless @force_sync, falling back to
 * sync when io_uring cannot be set up (no kernel support, seccomp, sysctl
 * kernel.io_uring_disabled, RLIMIT_MEMLOCK...). In that case *@fallback_err
 * (if not NULL) receives the io_uring error, else 0.
 * Returns 0 or a negative errno (the sync backend itself cannot fail).
 */
int blk_backend_open(struct blk_backend *be, int fd, unsigned depth, bool force_sync,
		     blk_complete_fn complete, void *owner, int *fallback_err);

/* drain() then destroy(). Safe on a zeroed backend. Leaves @fd open. */
void blk_backend_close(struct blk_backend *be);

/* Shared helpers for the implementations. */

/* Account @n more bytes transferred: advance io->first and shrink/shift the
 * partially transferred iov entry. */
void blk_io_advance(struct blk_io *io, uint64_t n);

/* The synchronous versions of each operation (whole transfer, retrying on
 * short counts and EINTR): 0 or a negative errno. */
int blk_sync_rw(int fd, struct blk_io *io);
int blk_sync_flush(int fd);

#endif
