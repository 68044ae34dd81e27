/*
 * virtio-blk device (virtio 1.2 section 5.2) over a raw image file or block
 * device, one request queue.
 *
 * A request is a descriptor chain seen as two byte streams: the
 * device-readable bytes (16-byte header { le32 type; le32 reserved; le64
 * sector }, then the data of a write or the segments of a discard/write
 * zeroes) and the device-writable bytes (the data of a read or of GET_ID,
 * then the status byte, which is the last writable byte). How the driver cuts
 * the streams into descriptors does not matter. Data is never copied: the
 * backend reads/writes straight through iovecs into guest memory.
 *
 * Decisions where the specification leaves room:
 *  - A chain with no writable byte cannot be answered: it is returned with
 *    used length 0 and a warning; the device keeps working.
 *  - IN needs exactly the 16 header bytes readable, OUT exactly the status
 *    byte writable (a data buffer in the wrong direction is a driver error,
 *    IOERR, instead of a silent zero-length transfer). Data lengths must be
 *    multiples of 512 and lie within the capacity, computed without overflow.
 *  - Used length: data bytes + 1 for a successful read or GET_ID, else 1
 *    (only the status byte is known to be written).
 *  - GET_ID copies min(20, buffer) bytes of the NUL-padded serial (all NULs
 *    when no serial was configured) and succeeds.
 *  - FLUSH on a read-only disk succeeds at once (nothing to make stable).
 *  - DISCARD and WRITE_ZEROES are offered for writable disks and run
 *    synchronously (fallocate, or BLKDISCARD/BLKZEROOUT on block devices);
 *    a discard the host cannot do still succeeds (it is only a hint), write
 *    zeroes falls back to writing zeroes.
 *  - Host errors (EIO, ENOSPC, end of file on an image that shrank) complete
 *    the request with IOERR; the VM keeps running.
 */
#include "virtio/blk.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/block.h"
#include "devices/host.h"
#include "errbuf.h"
#include "evloop.h"
#include "snapshot/state.h"
#include "virtio/mmio.h"
#include "virtio/queue.h"

#define BLK_INLINE_IOV 8   /* data iovecs kept in the request itself */
#define BLK_LOG_ERRORS 8   /* host I/O errors logged as warnings per disk */

#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

struct blk_req {
	struct blk_io io;
	struct virtio_blk *b;
	struct virtq *q;
	volatile uint8_t *status; /* the last writable byte of the chain */
	uint32_t written_ok;      /* used length if the I/O succeeds */
	uint16_t head;
	bool heap_iov;
	struct blk_req *next_free;
	struct iovec inline_iov[BLK_INLINE_IOV];
};

struct virtio_blk {
	const struct dev_host *host; /* NULL in unit tests */
	struct virtio_device *vdev;  /* NULL until added to a VM */
	char *path;
	int fd;
	bool read_only;
	bool is_blkdev;
	uint64_t capacity;           /* 512-byte sectors */
	uint64_t features;
	char id[VIRTIO_BLK_ID_BYTES];
	uint8_t config[VIRTIO_BLK_CFG_SIZE];
	struct blk_backend be;

	struct virtq *q;             /* queue the requests in flight belong to */
	bool stalled;                /* stopped taking requests: none free */
	bool draining;               /* reset: drop results */
	bool ring_error;             /* a push failed: the ring is broken */
	unsigned pushed;             /* used entries since blk_pushed() */
	unsigned errors;             /* host I/O errors so far */

	struct ev_handler ev;        /* completion eventfd in the VM's loop */
	bool ev_registered;

	struct blk_req *free_list;
	struct blk_req reqs[VIRTIO_BLK_QUEUE_DEPTH];
	struct virtq_chain chain;    /* scratch for virtq_pop */
};

#define blk_log(b, level, ...) host_log((b)->host, level, __VA_ARGS__)

/* ------------------------------------------------------------ small utils */

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

/* [sector, sector + nsectors) inside the disk, without overflow. */
static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t nsectors)
{
	return sector <= b->capacity && nsectors <= b->capacity - sector;
}

/*
 * Describe bytes [off, off + len) of the buffers src[0 .. n) in dst (room
 * for n entries). Returns the number of entries used.
 */
/* ------------------------------------------------------- request tracking */

static struct blk_req *req_get(struct virtio_blk *b)
{
	struct blk_req *r = b->free_list;
	if (r) {
		b->free_list = r->next_free;
		r->next_free = NULL;
		r->heap_iov = false;
	}
	return r;
}

static void req_put(struct virtio_blk *b, struct blk_req *r)
{
	if (r->heap_iov)
		free(r->io.iov);
	r->heap_iov = false;
	r->io.iov = NULL;
	r->next_free = b->free_list;
	b->free_list = r;
}

static void push_used(struct virtio_blk *b, struct virtq *q, uint16_t head, uint32_t written)
{
	if (virtq_push(q, head, written) < 0)
		b->ring_error = true;
	else
		b->pushed++;
}

/* Write the status byte, hand the chain back, recycle the request. */
static void finish(struct virtio_blk *b, struct blk_req *r, uint8_t status, uint32_t written)
{
	*r->status = status;
	push_used(b, r->q, r->head, written);
	req_put(b, r);
}

static const char *op_name(enum blk_op op)
{
	switch (op) {
	case BLK_OP_READ: return "read";
	case BLK_OP_WRITE: return "write";
	case BLK_OP_FLUSH: return "flush";
	}
	return "?";
}

static void log_host_error(struct virtio_blk *b, const struct blk_io *io, int err)
{
	b->errors++;
	int level = b->errors <= BLK_LOG_ERRORS ? MICROVM_LOG_WARN : MICROVM_LOG_DEBUG;
	blk_log(b, level, "disk %s: %s of %llu bytes at offset %llu failed: %s%s", b->path,
		op_name(io->op), (unsigned long long)io->len, (unsigned long long)io->offset,
		strerror(-err),
		b->errors == BLK_LOG_ERRORS ? " (further errors logged at debug level)" : "");
}

/* Backend completion callback. */
static void io_done(void *owner, struct blk_io *io)
{
	struct virtio_blk *b = owner;
	struct blk_req *r = container_of(io, struct blk_req, io);
	if (b->draining) {
		req_put(b, r); /* the ring it came from was reset */
		return;
	}
	if (io->result < 0) {
		log_host_error(b, io, io->result);
		finish(b, r, VIRTIO_BLK_S_IOERR, 1);
	} else {
		finish(b, r, VIRTIO_BLK_S_OK, r->written_ok);
	}
}

/* ------------------------------------------------------------- requests */

static void start_io(struct virtio_blk *b, struct blk_req *r)
{
	if (b->be.ops->submit(&b->be, &r->io) < 0) {
		blk_log(b, MICROVM_LOG_WARN, "disk %s: cannot queue a %s", b->path,
			op_name(r->io.op));
		finish(b, r, VIRTIO_BLK_S_IOERR, 1);
	}
}

/* IN (@op READ) or OUT (WRITE) of @len data bytes at @sector. */
static void start_rw(struct virtio_blk *b, struct blk_req *r, const struct virtq_chain *c,
		     enum blk_op op, uint64_t sector, uint64_t len)
{
	if (len % VIRTIO_BLK_SECTOR_SIZE || !range_ok(b, sector, len / VIRTIO_BLK_SECTOR_SIZE)) {
		finish(b, r, VIRTIO_BLK_S_IOERR, 1);
		return;
	}
	if (len == 0) {
		finish(b, r, VIRTIO_BLK_S_OK, 1);
		return;
	}
	/* Reads fill the writable stream from its start; writes take the
	 * readable stream after the header. */
	const struct iovec *src = op == BLK_OP_READ ? c->iov + c->n_out : c->iov;
	uint32_t n = op == BLK_OP_READ ? c->n_in : c->n_out;
	uint64_t off = op == BLK_OP_READ ? 0 : VIRTIO_BLK_HDR_SIZE;
	struct iovec *iov = r->inline_iov;
	if (n > BLK_INLINE_IOV) {
		iov = malloc(n * sizeof(*iov));
		if (!iov) {
			finish(b, r, VIRTIO_BLK_S_IOERR, 1);
			return;
		}
		r->heap_iov = true;
	}
	r->io = (struct blk_io){
		.op = op,
		.iov = iov,
		.niov = virtq_iov_slice(src, n, off, len, iov),
		.offset = sector * VIRTIO_BLK_SECTOR_SIZE,
		.len = len,
	};
	r->written_ok = op == BLK_OP_READ ? (uint32_t)len + 1 : 1;
	start_io(b, r);
}

static void start_flush(struct virtio_blk *b, struct blk_req *r)
{
	if (b->read_only) {
		finish(b, r, VIRTIO_BLK_S_OK, 1);
		return;
	}
	r->io = (struct blk_io){ .op = BLK_OP_FLUSH };
	r->written_ok = 1;
	start_io(b, r);
}

/* Write @len zero bytes at @off with plain writes. */
static int write_zeroes_slow(int fd, uint64_t off, uint64_t len)
{
	static const uint8_t zero_page[4096];
	struct iovec iov[16];
	for (unsigned i = 0; i < 16; i++)
		iov[i] = (struct iovec){ (void *)zero_page, sizeof(zero_page) };
	while (len > 0) {
		uint64_t chunk = len < sizeof(zero_page) * 16 ? len : sizeof(zero_page) * 16;
		unsigned n = (unsigned)((chunk + sizeof(zero_page) - 1) / sizeof(zero_page));
		iov[n - 1].iov_len = chunk - (uint64_t)(n - 1) * sizeof(zero_page);
		ssize_t w = pwritev(fd, iov, (int)n, (off_t)off);
		iov[n - 1].iov_len = sizeof(zero_page);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

static bool not_supported(int e)
{
	return e == EOPNOTSUPP || e == ENOSYS || e == ENOTTY || e == EINVAL;
}

static int do_discard(struct virtio_blk *b, uint64_t off, uint64_t len)
{
	int r;
	if (b->is_blkdev) {
		uint64_t range[2] = { off, len };
		r = ioctl(b->fd, BLKDISCARD, range);
	} else {
		r = fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len);
	}
	if (r < 0 && !not_supported(errno))
		return -errno;
	return 0; /* discarding nothing is a valid discard */
}

static int do_write_zeroes(struct virtio_blk *b, uint64_t off, uint64_t len, bool unmap)
{
	int r;
	if (b->is_blkdev) {
		uint64_t range[2] = { off, len };
		r = ioctl(b->fd, BLKZEROOUT, range);
	} else {
		/* A hole reads back as zeroes: allowed when the driver says so. */
		r = -1;
		errno = EOPNOTSUPP;
		if (unmap)
			r = fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)off, (off_t)len);
		if (r < 0 && not_supported(errno))
			r = fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
				      (off_t)off, (off_t)len);
	}
	if (r == 0)
		return 0;
	if (!not_supported(errno))
		return -errno;
	return write_zeroes_slow(b->fd, off, len);
}

/* DISCARD / WRITE_ZEROES: the status to report. */
static uint8_t discard_write_zeroes(struct virtio_blk *b, const struct virtq_chain *c,
				    uint32_t type, uint64_t data_out, uint64_t data_in)
{
	bool discard = type == VIRTIO_BLK_T_DISCARD;
	uint32_t max_seg = discard ? VIRTIO_BLK_MAX_DISCARD_SEG : 1;
	uint32_t max_sectors = discard ? VIRTIO_BLK_MAX_DISCARD_SECTORS
				       : VIRTIO_BLK_MAX_WZ_SECTORS;
	if (b->read_only)
		return VIRTIO_BLK_S_IOERR;
	if (data_in != 0 || data_out == 0 || data_out % VIRTIO_BLK_SEG_SIZE ||
	    data_out / VIRTIO_BLK_SEG_SIZE > max_seg)
		return VIRTIO_BLK_S_IOERR;
	uint8_t segs[VIRTIO_BLK_MAX_DISCARD_SEG * VIRTIO_BLK_SEG_SIZE];
	uint32_t nseg = (uint32_t)(data_out / VIRTIO_BLK_SEG_SIZE);
	if (virtq_read(c, VIRTIO_BLK_HDR_SIZE, segs, data_out) != data_out)
		return VIRTIO_BLK_S_IOERR;
	/* Unsupported flags first (MUST be UNSUPP), then ranges. */
	for (uint32_t i = 0; i < nseg; i++) {
		uint32_t flags = get_le32(segs + i * VIRTIO_BLK_SEG_SIZE + 12);
		if ((flags & ~VIRTIO_BLK_WZ_F_UNMAP) || (discard && (flags & VIRTIO_BLK_WZ_F_UNMAP)))
			return VIRTIO_BLK_S_UNSUPP;
	}
	for (uint32_t i = 0; i < nseg; i++) {
		uint64_t sector = get_le64(segs + i * VIRTIO_BLK_SEG_SIZE);
		uint32_t num = get_le32(segs + i * VIRTIO_BLK_SEG_SIZE + 8);
		if (num > max_sectors || !range_ok(b, sector, num))
			return VIRTIO_BLK_S_IOERR;
	}
	for (uint32_t i = 0; i < nseg; i++) {
		const uint8_t *s = segs + i * VIRTIO_BLK_SEG_SIZE;
		uint64_t off = get_le64(s) * VIRTIO_BLK_SECTOR_SIZE;
		uint64_t len = (uint64_t)get_le32(s + 8) * VIRTIO_BLK_SECTOR_SIZE;
		if (len == 0)
			continue;
		int r = discard ? do_discard(b, off, len)
				: do_write_zeroes(b, off, len, get_le32(s + 12) & VIRTIO_BLK_WZ_F_UNMAP);
		if (r < 0) {
			struct blk_io what = { .op = BLK_OP_WRITE, .offset = off, .len = len };
			log_host_error(b, &what, r);
			return VIRTIO_BLK_S_IOERR;
		}
	}
	return VIRTIO_BLK_S_OK;
}

/* One chain taken from the ring; a free request slot exists. */
static void handle_chain(struct virtio_blk *b, struct virtq *q, const struct virtq_chain *c)
{
	if (c->n_in == 0 || c->in_len == 0) {
		blk_log(b, MICROVM_LOG_WARN, "disk %s: request without a writable status byte; "
			"returned unanswered", b->path);
		push_used(b, q, c->head, 0);
		return;
	}
	struct blk_req *r = req_get(b);
	r->q = q;
	r->head = c->head;
	const struct iovec *last = &c->iov[c->n_out + c->n_in - 1];
	r->status = (uint8_t *)last->iov_base + last->iov_len - 1;

	if (c->out_len < VIRTIO_BLK_HDR_SIZE) {
		finish(b, r, VIRTIO_BLK_S_IOERR, 1);
		return;
	}
	uint8_t hdr[VIRTIO_BLK_HDR_SIZE];
	virtq_read(c, 0, hdr, sizeof(hdr));
	uint32_t type = get_le32(hdr);
	uint64_t sector = get_le64(hdr + 8);
	uint64_t data_out = c->out_len - VIRTIO_BLK_HDR_SIZE; /* readable after the header */
	uint64_t data_in = c->in_len - 1;                     /* writable before the status */

	switch (type) {
	case VIRTIO_BLK_T_IN:
		if (data_out != 0)
			finish(b, r, VIRTIO_BLK_S_IOERR, 1);
		else
			start_rw(b, r, c, BLK_OP_READ, sector, data_in);
		break;
	case VIRTIO_BLK_T_OUT:
		if (b->read_only || data_in != 0)
			finish(b, r, VIRTIO_BLK_S_IOERR, 1);
		else
			start_rw(b, r, c, BLK_OP_WRITE, sector, data_out);
		break;
	case VIRTIO_BLK_T_FLUSH:
		start_flush(b, r);
		break;
	case VIRTIO_BLK_T_GET_ID: {
		uint64_t n = data_in < VIRTIO_BLK_ID_BYTES ? data_in : VIRTIO_BLK_ID_BYTES;
		virtq_write(c, 0, b->id, n);
		finish(b, r, VIRTIO_BLK_S_OK, (uint32_t)n + 1);
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		finish(b, r, discard_write_zeroes(b, c, type, data_out, data_in), 1);
		break;
	default:
		finish(b, r, VIRTIO_BLK_S_UNSUPP, 1);
		break;
	}
}

int blk_process_queue(struct virtio_blk *b, struct virtq *q)
{
	int taken = 0, ret = 0;
	b->q = q;
	b->stalled = false;
	for (;;) {
		if (!b->free_list) {
			b->stalled = true; /* resumed by blk_complete() */
			break;
		}
		int r = virtq_pop_or_enable_notify(q, &b->chain);
		if (r < 0) {
			ret = -EIO;
			break;
		}
		if (r == 0)
			break;
		handle_chain(b, q, &b->chain);
		taken++;
	}
	b->be.ops->commit(&b->be);
	if (b->ring_error) {
		b->ring_error = false;
		ret = -EIO;
	}
	return ret < 0 ? ret : taken;
}

unsigned blk_pushed(struct virtio_blk *b)
{
	unsigned n = b->pushed;
	b->pushed = 0;
	return n;
}

int blk_complete(struct virtio_blk *b, bool refill)
{
	int ret = (int)b->be.ops->reap(&b->be);
	if (refill && b->stalled && b->q && b->free_list && blk_process_queue(b, b->q) < 0)
		ret = -EIO;
	if (b->ring_error) {
		b->ring_error = false;
		ret = -EIO;
	}
	return ret;
}

void blk_reset(struct virtio_blk *b)
{
	b->draining = true;
	b->be.ops->drain(&b->be);
	b->draining = false;
	b->q = NULL;
	b->stalled = false;
	b->ring_error = false;
	b->pushed = 0;
}

/* ------------------------------------------------------------ device setup */

#define BLK_FEATURES_COMMON                                                      \
	((1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |      \
	 (1ULL << VIRTIO_BLK_F_FLUSH))
#define BLK_FEATURES_RW \
	(BLK_FEATURES_COMMON | (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES))
#define BLK_FEATURES_RO (BLK_FEATURES_COMMON | (1ULL << VIRTIO_BLK_F_RO))

static void build_config(struct virtio_blk *b)
{
	uint8_t *c = b->config;
	memset(c, 0, sizeof(b->config));
	put_le64(c + VIRTIO_BLK_CFG_CAPACITY, b->capacity);
	put_le32(c + VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_SEG_MAX);
	put_le32(c + VIRTIO_BLK_CFG_BLK_SIZE, VIRTIO_BLK_SECTOR_SIZE);
	if (b->features & (1ULL << VIRTIO_BLK_F_DISCARD)) {
		put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VIRTIO_BLK_MAX_DISCARD_SECTORS);
		put_le32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, VIRTIO_BLK_MAX_DISCARD_SEG);
		put_le32(c + VIRTIO_BLK_CFG_DISCARD_ALIGNMENT, VIRTIO_BLK_DISCARD_ALIGNMENT);
	}
	if (b->features & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)) {
		put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SECTORS, VIRTIO_BLK_MAX_WZ_SECTORS);
		put_le32(c + VIRTIO_BLK_CFG_MAX_WZ_SEG, 1);
		/* Regular files punch holes for write zeroes with unmap. */
		c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP] = b->is_blkdev ? 0 : 1;
	}
	put_le16(c + VIRTIO_BLK_CFG_NUM_QUEUES, 1);
}

void blk_config_read(struct virtio_blk *b, uint32_t off, void *data, uint32_t len)
{
	if (off > sizeof(b->config) || len > sizeof(b->config) - off) {
		memset(data, 0, len);
		return;
	}
	memcpy(data, b->config + off, len);
}

/* Size in bytes of the regular file or block device @fd; at least a sector. */
static int blk_measure(int fd, const char *path, bool *is_blkdev, uint64_t *bytes, char *err,
		       size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "%s: %s", path, strerror(e));
	}
	*is_blkdev = S_ISBLK(st.st_mode);
	if (S_ISREG(st.st_mode)) {
		*bytes = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, bytes) < 0) {
			int e = errno;
			return errbuf_fail(err, errlen, -e, "%s: cannot get the device size: %s", path,
					   strerror(e));
		}
	} else {
		return errbuf_fail(err, errlen, -EINVAL, "%s: not a regular file or block device", path);
	}
	if (*bytes < VIRTIO_BLK_SECTOR_SIZE)
		return errbuf_fail(err, errlen, -EINVAL, "%s: %llu bytes is smaller than one %u-byte sector",
				   path, (unsigned long long)*bytes, VIRTIO_BLK_SECTOR_SIZE);
	return 0;
}

/* Open the disk image or block device @path (read-only if @ro) in blocking
 * mode, and measure it. */
static int blk_open_file(const char *path, bool ro, int *fdp, bool *is_blkdev, uint64_t *bytes,
			 char *err, size_t errlen)
{
	/* O_NONBLOCK: opening a FIFO must not hang (it is rejected below). */
	int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		if (e == EISDIR)
			return errbuf_fail(err, errlen, -EINVAL, "%s: not a regular file or block device",
					   path);
		return errbuf_fail(err, errlen, -e, "%s: %s", path, strerror(e));
	}
	int r = blk_measure(fd, path, is_blkdev, bytes, err, errlen);
	int fl = r == 0 ? fcntl(fd, F_GETFL) : 0;
	if (r == 0 && (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)) {
		int e = errno;
		r = errbuf_fail(err, errlen, -e, "%s: fcntl: %s", path, strerror(e));
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	*fdp = fd;
	return 0;
}

/* The device state for the open disk @fd of @bytes, all requests free; NULL
 * when out of memory. */
static struct virtio_blk *blk_new(const struct dev_host *host, const char *path, int fd, bool ro,
				  bool is_blkdev, uint64_t bytes, const char *serial)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b || !(b->path = strdup(path))) {
		free(b);
		return NULL;
	}
	b->host = host;
	b->fd = fd;
	b->read_only = ro;
	b->is_blkdev = is_blkdev;
	b->capacity = bytes / VIRTIO_BLK_SECTOR_SIZE;
	b->features = ro ? BLK_FEATURES_RO : BLK_FEATURES_RW;
	if (serial)
		memcpy(b->id, serial, strnlen(serial, VIRTIO_BLK_ID_BYTES));
	for (int i = VIRTIO_BLK_QUEUE_DEPTH - 1; i >= 0; i--) {
		b->reqs[i].b = b;
		req_put(b, &b->reqs[i]);
	}
	build_config(b);
	return b;
}

int blk_open(const struct dev_host *host, const char *path, uint32_t flags, const char *serial,
	     struct virtio_blk **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!path)
		return errbuf_fail(err, errlen, -EINVAL, "path is NULL");
	if (serial && strnlen(serial, VIRTIO_BLK_ID_BYTES + 1) > VIRTIO_BLK_ID_BYTES)
		return errbuf_fail(err, errlen, -EINVAL, "%s: serial \"%.24s...\" is longer than %u bytes",
				   path, serial, VIRTIO_BLK_ID_BYTES);
	bool ro = flags & MICROVM_DISK_READ_ONLY;
	int fd = -1;
	bool is_blkdev = false;
	uint64_t bytes = 0;
	int r = blk_open_file(path, ro, &fd, &is_blkdev, &bytes, err, errlen);
	if (r < 0)
		return r;
	struct virtio_blk *b = blk_new(host, path, fd, ro, is_blkdev, bytes, serial);
	if (!b) {
		close(fd);
		return errbuf_fail(err, errlen, -ENOMEM, "%s: out of memory", path);
	}

	int why = 0;
	r = blk_backend_open(&b->be, fd, VIRTIO_BLK_QUEUE_DEPTH,
			     flags & MICROVM_DISK_BACKEND_SYNC, io_done, b, &why);
	if (r < 0) {
		free(b->path);
		free(b);
		close(fd);
		return errbuf_fail(err, errlen, r, "%s: I/O backend: %s", path, strerror(-r));
	}
	if (why)
		blk_log(b, MICROVM_LOG_WARN, "disk %s: io_uring unavailable (%s); using the "
			"synchronous backend", path, strerror(-why));
	*out = b;
	return 0;
}

void blk_free(struct virtio_blk *b)
{
	if (!b)
		return;
	b->draining = true;
	blk_backend_close(&b->be); /* waits for the requests in flight */
	close(b->fd);
	free(b->path);
	free(b);
}

const char *blk_backend_name(const struct virtio_blk *b)
{
	return b->be.ops ? b->be.ops->name : NULL;
}

uint64_t blk_capacity(const struct virtio_blk *b)
{
	return b->capacity;
}

uint64_t blk_features(const struct virtio_blk *b)
{
	return b->features;
}

int blk_event_fd(const struct virtio_blk *b)
{
	return b->be.event_fd;
}

unsigned blk_in_flight(const struct virtio_blk *b)
{
	return b->be.in_flight;
}

/* ---------------------------------------------------- transport callbacks */

/* Event loop: the ring's eventfd fired. */
static void blk_ring_event(void *opaque, uint32_t events)
{
	struct virtio_blk *b = opaque;
	struct virtio_device *d = b->vdev;
	(void)events;
	pthread_mutex_lock(&d->lock);
	bool live = (d->status & VIRTIO_STATUS_DRIVER_OK) &&
		    !(d->status & VIRTIO_STATUS_NEEDS_RESET) && d->queues[0].ready;
	if (blk_complete(b, live) < 0)
		virtio_set_needs_reset(d, "request ring or used ring malformed");
	if (blk_pushed(b))
		virtio_notify_used(d, 0);
	pthread_mutex_unlock(&d->lock);
}

static void blk_dev_config_read(void *opaque, uint32_t off, void *data, uint32_t len)
{
	blk_config_read(opaque, off, data, len);
}

static int blk_dev_activate(void *opaque, struct virtio_device *vdev)
{
	struct virtio_blk *b = opaque;
	b->vdev = vdev;
	if (b->ev_registered || b->be.event_fd < 0)
		return 0;
	ev_handler_set(&b->ev, b->be.event_fd, blk_ring_event, b);
	int r = evloop_add(vdev->host->loop, &b->ev, EPOLLIN);
	if (r < 0) {
		blk_log(b, MICROVM_LOG_ERROR, "disk %s: cannot watch I/O completions: %s",
			b->path, strerror(-r));
		return r;
	}
	b->ev_registered = true;
	return 0;
}

static void blk_dev_notify(void *opaque, struct virtio_device *vdev, uint16_t q)
{
	struct virtio_blk *b = opaque;
	if (blk_process_queue(b, &vdev->queues[q]) < 0)
		virtio_set_needs_reset(vdev, "malformed request ring");
	if (blk_pushed(b))
		virtio_notify_used(vdev, q);
}

static void blk_dev_reset(void *opaque)
{
	blk_reset(opaque);
}

static void blk_dev_release(void *opaque)
{
	blk_free(opaque);
}

/* Snapshot: the event loop is stopped; wait for in-flight I/O and push its
 * results so the rings in guest memory are complete. */
static void blk_dev_quiesce(void *opaque, struct virtio_device *vdev)
{
	struct virtio_blk *b = opaque;
	b->be.ops->drain(&b->be);
	if (blk_pushed(b))
		virtio_notify_used(vdev, 0);
}

static void blk_dev_save(void *opaque, struct st_writer *w, int node)
{
	struct virtio_blk *b = opaque;
	st_str(w, node, "path", b->path);
	st_u32(w, node, "read-only", b->read_only);
	st_u32(w, node, "backend-sync", b->be.ops == &blk_backend_sync_ops);
	st_blob(w, node, "serial", b->id, strnlen(b->id, sizeof(b->id)));
	st_u64(w, node, "capacity", b->capacity);
}

static int blk_dev_load(void *opaque, struct virtio_device *vdev, const void *fdt, int node,
			char *err, size_t errlen)
{
	struct virtio_blk *b = opaque;
	uint64_t cap;
	int r = st_get_u64(fdt, node, "capacity", &cap, err, errlen);
	if (r < 0)
		return r;
	if (cap != b->capacity)
		return errbuf_fail(err, errlen, -EINVAL, "disk %s: %llu sectors, the snapshot's disk had %llu",
				   b->path, (unsigned long long)b->capacity, (unsigned long long)cap);
	return 0;
}

int blk_config_from_state(const void *fdt, int node, microvm_disk_config *dc,
			  char serial[VIRTIO_BLK_ID_BYTES + 1], char *err, size_t errlen)
{
	uint32_t ro, sync;
	int r = st_get_u32(fdt, node, "read-only", &ro, err, errlen);
	if (r == 0)
		r = st_get_u32(fdt, node, "backend-sync", &sync, err, errlen);
	const void *sp;
	size_t sl = 0;
	if (r == 0)
		r = st_get_var(fdt, node, "serial", &sp, &sl, VIRTIO_BLK_ID_BYTES, err, errlen);
	if (r < 0)
		return r;
	memcpy(serial, sp, sl);
	serial[sl] = '\0';
	dc->path = st_get_str(fdt, node, "path");
	dc->serial = serial[0] ? serial : NULL;
	dc->flags = (ro ? MICROVM_DISK_READ_ONLY : 0) | (sync ? MICROVM_DISK_BACKEND_SYNC : 0);
	return 0;
}

const struct virtio_device_ops virtio_blk_ops = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.features = BLK_FEATURES_RW, /* a read-only disk overrides it (b->features) */
	.num_queues = 1,
	.config_size = VIRTIO_BLK_CFG_SIZE,
	.config_read = blk_dev_config_read,
	.activate = blk_dev_activate,
	.notify = blk_dev_notify,
	.reset = blk_dev_reset,
	.release = blk_dev_release,
	.quiesce = blk_dev_quiesce,
	.save = blk_dev_save,
	.load = blk_dev_load,
};


