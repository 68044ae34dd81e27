/*
 * bench-blk: virtio-blk device-path read throughput against the same file
 * read directly with io_uring on the host, in one process, no KVM.
 *
 *   bench-blk [--seconds N] [--runs N] [--file PATH] [--no-sync] [--cpu N]
 *
 *   --seconds N  length of one measured run (default 2)
 *   --runs N     runs per case; the table shows the median (default 5)
 *   --file PATH  image to read (must exist, >= 16 MiB). Default:
 *                /var/tmp/microvm-bench-blk.img, 512 MiB of random bytes,
 *                created on first use and reused afterwards.
 *   --no-sync    skip the device runs on the synchronous backend
 *   --cpu N      pin the process (and so its io_uring work) to CPU N
 *
 * Cases:
 *   4K randread QD32  4 KiB reads at random 4 KiB-aligned offsets, 32 in flight
 *   1M seqread QD4    1 MiB reads at consecutive offsets (wrapping), 4 in flight
 *
 * Host side: liburing directly, io_uring_queue_init(64), IORING_OP_READV of
 * one iovec per request (the same opcode the device backend issues), the file
 * opened O_RDONLY | O_CLOEXEC like a read-only disk in blk_open(); every
 * reaped completion is replaced at once and the batch goes in with
 * io_uring_submit_and_wait(1).
 *
 * Device side: the request engine of lib/virtio/blk.c (blk_open with
 * MICROVM_DISK_READ_ONLY, blk_process_queue, blk_complete) over guest memory
 * from gm_init, driven by a synthetic driver that does what a guest driver
 * does: it writes descriptors (16-byte header out, data in, 1-byte status in)
 * and the avail ring, "kicks" (blk_process_queue), waits for the backend's
 * eventfd like the VM's event loop, calls blk_complete, then reads the used
 * ring, checks status and used length, and refills the same slots.
 * Both sides read into the same kind of memory (a gm_init memfd mapping) and
 * use the same offset sequence (same PRNG seed per run).
 *
 * The file is read once before measuring and its page-cache residency is
 * printed: the numbers are page-cache-hot (the device opens images without
 * O_DIRECT, so there is no direct-I/O variant). Runs alternate host / device
 * so drift affects both; each number is the median of --runs runs.
 * Two tables: wall clock (requests / elapsed time) and CPU-normalised
 * (requests / process CPU time, which counts io-wq workers and kernel time
 * too); the second is the one to trust when other load shares the CPUs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <microvm.h>

#include "arch/arch.h"
#include "memory.h"
#include "virtio/blk.h"
#include "virtio/queue.h"

#define DEFAULT_FILE "/var/tmp/microvm-bench-blk.img"
#define DEFAULT_FILE_SIZE (512 * MIB)
#define MIN_FILE_SIZE (16 * MIB)

/* Guest-physical layout of the synthetic driver's memory. */
#define GUEST_MEM (48 * MIB)
#define QSZ 256
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define HDR_GPA 0x40000ULL    /* slot i: header at + 16 * i */
#define STATUS_GPA 0x50000ULL /* slot i: status byte at + i */
#define DATA_GPA (1 * MIB)    /* slot i: data at + i * block size */
#define MAX_QD 32

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

#define HOST_RING_ENTRIES 64

struct bcase {
	const char *name;
	uint32_t bs;   /* bytes per request */
	unsigned qd;   /* requests in flight */
	bool random;   /* random aligned offsets, else sequential */
	bool iops;     /* report IOPS, else MB/s */
};

static const struct bcase cases[] = {
	{ "4K randread QD32", 4096, 32, true, true },
	{ "1M seqread QD4", 1u << 20, 4, false, false },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* ---------------------------------------------------------------- utils */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench-blk: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU time of the whole process: includes io_uring's io-wq workers (threads
 * of this process) as well as the kernel time of inline completions. */
static double cpu_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* What one run measured. */
struct result {
	double wall; /* requests per second of wall time */
	double cpu;  /* requests per second of process CPU time */
};

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The offset sequence both sides follow. */
struct offgen {
	const struct bcase *c;
	uint64_t nblocks; /* whole blocks of c->bs in the file */
	uint64_t seed;
	uint64_t next;    /* sequential: next block */
};

static void offgen_init(struct offgen *g, const struct bcase *c, uint64_t file_size, int run)
{
	g->c = c;
	g->nblocks = file_size / c->bs;
	g->seed = 0x5eed0000ULL + (uint64_t)run;
	g->next = 0;
}

static uint64_t offgen_next(struct offgen *g)
{
	uint64_t blk;
	if (g->c->random) {
		blk = splitmix64(&g->seed) % g->nblocks;
	} else {
		blk = g->next;
		g->next = (g->next + 1) % g->nblocks;
	}
	return blk * g->c->bs;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
	double s[64];
	memcpy(s, v, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* --------------------------------------------------------------- the file */

static uint64_t prepare_file(const char *path, bool create)
{
	struct stat st;
	if (create && (stat(path, &st) < 0 || (uint64_t)st.st_size != DEFAULT_FILE_SIZE)) {
		printf("creating %s (%llu MiB of random data)...\n", path,
		       (unsigned long long)(DEFAULT_FILE_SIZE / MIB));
		fflush(stdout);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			die("%s: %s", path, strerror(errno));
		uint64_t *buf = malloc(MIB);
		if (!buf)
			die("out of memory");
		uint64_t seed = 42;
		for (uint64_t off = 0; off < DEFAULT_FILE_SIZE; off += MIB) {
			for (size_t i = 0; i < MIB / sizeof(*buf); i++)
				buf[i] = splitmix64(&seed);
			if (pwrite(fd, buf, MIB, (off_t)off) != (ssize_t)MIB)
				die("%s: write: %s", path, strerror(errno));
		}
		if (fsync(fd) < 0)
			die("%s: fsync: %s", path, strerror(errno));
		free(buf);
		close(fd);
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		die("%s: not a regular file", path);
	uint64_t size = (uint64_t)st.st_size;
	if (size < MIN_FILE_SIZE)
		die("%s: %llu bytes; need at least %llu", path, (unsigned long long)size,
		    (unsigned long long)MIN_FILE_SIZE);

	/* Read it all once so the page cache holds it. */
	char *buf = malloc(MIB);
	if (!buf)
		die("out of memory");
	for (uint64_t off = 0; off < size;) {
		ssize_t n = pread(fd, buf, MIB, (off_t)off);
		if (n <= 0)
			die("%s: read: %s", path, n < 0 ? strerror(errno) : "short file");
		off += (uint64_t)n;
	}
	free(buf);

	/* Residency, for the record. */
	long page = sysconf(_SC_PAGESIZE);
	uint64_t pages = (size + (uint64_t)page - 1) / (uint64_t)page, resident = 0;
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	unsigned char *vec = malloc(pages);
	if (map != MAP_FAILED && vec && mincore(map, size, vec) == 0) {
		for (uint64_t i = 0; i < pages; i++)
			resident += vec[i] & 1;
		printf("file: %s, %llu MiB, %.1f%% in the page cache (numbers below are "
		       "page-cache-hot)\n", path, (unsigned long long)(size / MIB),
		       100.0 * (double)resident / (double)pages);
	} else {
		printf("file: %s, %llu MiB (residency unknown)\n", path,
		       (unsigned long long)(size / MIB));
	}
	free(vec);
	if (map != MAP_FAILED)
		munmap(map, size);
	close(fd);
	return size;
}

/* ------------------------------------------------------- host baseline */

/* One run of @c with io_uring straight on the file. Returns requests/s. */
static struct result run_host(const char *path, uint64_t size, const struct bcase *c, int run,
		       double secs, struct guest_mem *mem)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	struct io_uring ring;
	int r = io_uring_queue_init(HOST_RING_ENTRIES, &ring, 0);
	if (r < 0)
		die("io_uring_queue_init: %s", strerror(-r));

	struct iovec iov[MAX_QD];
	uint64_t off[MAX_QD];
	struct offgen g;
	offgen_init(&g, c, size, run);
	for (unsigned i = 0; i < c->qd; i++) {
		iov[i].iov_base = gm_ptr(mem, DATA_GPA + (uint64_t)i * c->bs, c->bs);
		iov[i].iov_len = c->bs;
		if (!iov[i].iov_base)
			die("host buffer outside memory");
	}

	unsigned in_flight = 0;
	for (unsigned i = 0; i < c->qd; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		off[i] = offgen_next(&g);
		io_uring_prep_readv(sqe, fd, &iov[i], 1, off[i]);
		io_uring_sqe_set_data64(sqe, i);
		in_flight++;
	}

	uint64_t done = 0;
	bool stop = false;
	double t0 = now_s(), t1 = t0, deadline = t0 + secs, c0 = cpu_s(), c1 = c0;
	while (in_flight > 0) {
		r = io_uring_submit_and_wait(&ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			die("io_uring_submit_and_wait: %s", strerror(-r));
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			unsigned i = (unsigned)cqe->user_data;
			if (cqe->res != (int)c->bs)
				die("host read of %u bytes at %llu returned %d", c->bs,
				    (unsigned long long)off[i], cqe->res);
			n++;
			in_flight--;
			if (!stop) {
				done++;
				struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
				off[i] = offgen_next(&g);
				io_uring_prep_readv(sqe, fd, &iov[i], 1, off[i]);
				io_uring_sqe_set_data64(sqe, i);
				in_flight++;
			}
		}
		io_uring_cq_advance(&ring, n);
		if (!stop && (t1 = now_s()) >= deadline) {
			c1 = cpu_s();
			stop = true;
		}
	}
	io_uring_queue_exit(&ring);
	close(fd);
	return (struct result){ (double)done / (t1 - t0), (double)done / (c1 - c0) };
}

/* ------------------------------------------------------ synthetic driver */

struct drv {
	struct guest_mem *mem;
	uint8_t *desc, *avail_ring, *used_ring;
	volatile uint16_t *avail_idx_p, *used_idx_p;
	uint16_t avail_idx; /* next avail index we publish */
	uint16_t used_seen; /* used entries consumed */
	struct virtq q;
	const struct bcase *c;
	uint64_t off[MAX_QD];
};

static void *gpa(struct drv *d, uint64_t at, uint64_t len)
{
	void *p = gm_ptr(d->mem, at, len);
	if (!p)
		die("guest address 0x%llx outside memory", (unsigned long long)at);
	return p;
}

static void put_desc(struct drv *d, uint16_t idx, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *p = d->desc + 16u * idx;
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Fresh rings and one fixed 3-descriptor chain per slot (head = 3 * slot). */
static void drv_init(struct drv *d, struct guest_mem *mem, const struct bcase *c)
{
	memset(d, 0, sizeof(*d));
	d->mem = mem;
	d->c = c;
	memset(gpa(d, DESC_GPA, 0x40000), 0, 0x40000); /* desc, avail, used, headers */
	d->desc = gpa(d, DESC_GPA, 16ULL * QSZ);
	d->avail_idx_p = gpa(d, AVAIL_GPA + 2, 2);
	d->avail_ring = gpa(d, AVAIL_GPA + 4, 2ULL * QSZ);
	d->used_idx_p = gpa(d, USED_GPA + 2, 2);
	d->used_ring = gpa(d, USED_GPA + 4, 8ULL * QSZ);
	for (unsigned i = 0; i < c->qd; i++) {
		uint16_t h = (uint16_t)(3 * i);
		put_desc(d, h, HDR_GPA + 16ULL * i, VIRTIO_BLK_HDR_SIZE, VRING_DESC_F_NEXT,
			 (uint16_t)(h + 1));
		put_desc(d, (uint16_t)(h + 1), DATA_GPA + (uint64_t)i * c->bs, c->bs,
			 VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, (uint16_t)(h + 2));
		put_desc(d, (uint16_t)(h + 2), STATUS_GPA + i, 1, VRING_DESC_F_WRITE, 0);
		gpa(d, DATA_GPA + (uint64_t)i * c->bs, c->bs); /* in range */
	}
	d->q.mem = mem;
	d->q.size = QSZ;
	d->q.desc_gpa = DESC_GPA;
	d->q.avail_gpa = AVAIL_GPA;
	d->q.used_gpa = USED_GPA;
	if (virtq_activate(&d->q) < 0)
		die("virtq_activate failed");
	d->q.ready = true;
}

/* Fill in slot @i's header for a read at @off and make its chain available. */
static void drv_queue(struct drv *d, unsigned i, uint64_t off)
{
	uint8_t *h = d->mem->host + HDR_GPA + 16ULL * i; /* low RAM: gpa == offset */
	uint32_t type = VIRTIO_BLK_T_IN, reserved = 0;
	uint64_t sector = off / VIRTIO_BLK_SECTOR_SIZE;
	memcpy(h, &type, 4);
	memcpy(h + 4, &reserved, 4);
	memcpy(h + 8, &sector, 8);
	d->mem->host[STATUS_GPA + i] = 0xff;
	d->off[i] = off;
	uint16_t head = (uint16_t)(3 * i);
	memcpy(d->avail_ring + 2u * (d->avail_idx % QSZ), &head, 2);
	d->avail_idx++;
	__atomic_store_n(d->avail_idx_p, d->avail_idx, __ATOMIC_RELEASE);
}

/* Next used entry: slot index, or -1 if none. Checks status and length. */
static int drv_reap_one(struct drv *d)
{
	uint16_t used = __atomic_load_n(d->used_idx_p, __ATOMIC_ACQUIRE);
	if (used == d->used_seen)
		return -1;
	uint32_t id, len;
	const uint8_t *e = d->used_ring + 8u * (d->used_seen % QSZ);
	memcpy(&id, e, 4);
	memcpy(&len, e + 4, 4);
	d->used_seen++;
	unsigned i = id / 3;
	if (id % 3 || i >= d->c->qd)
		die("used ring: unexpected id %u", id);
	uint8_t st = d->mem->host[STATUS_GPA + i];
	if (st != VIRTIO_BLK_S_OK || len != d->c->bs + 1)
		die("device read of %u bytes at %llu: status %u, used length %u", d->c->bs,
		    (unsigned long long)d->off[i], st, len);
	return (int)i;
}

static struct virtio_blk *open_dev(const char *path, bool sync)
{
	struct virtio_blk *b;
	char err[256];
	uint32_t flags = MICROVM_DISK_READ_ONLY | (sync ? MICROVM_DISK_BACKEND_SYNC : 0);
	int r = blk_open(NULL, path, flags, NULL, &b, err, sizeof(err));
	if (r < 0)
		die("blk_open: %s", err);
	if (strcmp(blk_backend_name(b), sync ? "sync" : "io_uring") != 0)
		die("wanted the %s backend, got %s", sync ? "sync" : "io_uring",
		    blk_backend_name(b));
	return b;
}

/* Wait for backend completions like the VM's event loop, then push them. */
static void dev_wait_complete(struct virtio_blk *b)
{
	int efd = blk_event_fd(b);
	if (efd >= 0) {
		struct pollfd p = { .fd = efd, .events = POLLIN };
		if (poll(&p, 1, 5000) == 0)
			die("no completion from the device within 5 s");
	}
	if (blk_complete(b, true) < 0)
		die("blk_complete: ring error");
	(void)blk_pushed(b); /* the transport would notify the guest here */
}

/* One run of @c through the device. Returns requests/s. */
static struct result run_dev(const char *path, uint64_t size, const struct bcase *c, int run,
		      double secs, bool sync, struct guest_mem *mem)
{
	struct virtio_blk *b = open_dev(path, sync);
	struct drv d;
	drv_init(&d, mem, c);
	struct offgen g;
	offgen_init(&g, c, size, run);

	for (unsigned i = 0; i < c->qd; i++)
		drv_queue(&d, i, offgen_next(&g));
	unsigned in_flight = c->qd;
	if (blk_process_queue(b, &d.q) < 0)
		die("blk_process_queue: ring error");
	(void)blk_pushed(b);

	uint64_t done = 0;
	bool stop = false;
	double t0 = now_s(), t1 = t0, deadline = t0 + secs, c0 = cpu_s(), c1 = c0;
	while (in_flight > 0) {
		unsigned n = 0;
		int i;
		while ((i = drv_reap_one(&d)) >= 0) {
			n++;
			in_flight--;
			if (!stop) {
				done++;
				drv_queue(&d, (unsigned)i, offgen_next(&g));
				in_flight++;
			}
		}
		if (n > 0) {
			if (!stop) {
				/* The kick: the device takes the new chains. */
				if (blk_process_queue(b, &d.q) < 0)
					die("blk_process_queue: ring error");
				(void)blk_pushed(b);
				if ((t1 = now_s()) >= deadline) {
					c1 = cpu_s();
					stop = true;
				}
			}
		} else {
			dev_wait_complete(b);
		}
	}
	blk_free(b);
	return (struct result){ (double)done / (t1 - t0), (double)done / (c1 - c0) };
}

/* One request through the device compared with pread() on the file. */
static void verify_dev(const char *path, uint64_t size, bool sync, struct guest_mem *mem)
{
	static const struct bcase vc = { "verify", 4096, 1, true, true };
	struct virtio_blk *b = open_dev(path, sync);
	struct drv d;
	drv_init(&d, mem, &vc);
	uint64_t off = (size / 2) & ~4095ULL;
	drv_queue(&d, 0, off);
	if (blk_process_queue(b, &d.q) < 0)
		die("blk_process_queue: ring error");
	while (drv_reap_one(&d) < 0)
		dev_wait_complete(b);
	char want[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, want, sizeof(want), (off_t)off) != (ssize_t)sizeof(want))
		die("%s: pread: %s", path, strerror(errno));
	close(fd);
	if (memcmp(want, mem->host + DATA_GPA, sizeof(want)) != 0)
		die("device (%s) returned different data than pread", sync ? "sync" : "io_uring");
	blk_free(b);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench-blk [--seconds N] [--runs N] [--file PATH] [--no-sync] [--cpu N]\n");
}

static void fmt_val(char *buf, size_t len, const struct bcase *c, double reqs)
{
	if (c->iops)
		snprintf(buf, len, "%.0f IOPS", reqs);
	else
		snprintf(buf, len, "%.0f MB/s", reqs * c->bs / 1e6);
}

static double med_of(const struct result *r, int runs, bool cpu)
{
	double v[64];
	for (int k = 0; k < runs; k++)
		v[k] = cpu ? r[k].cpu : r[k].wall;
	return median(v, runs);
}

static void print_table(const char *title, struct result res[][3][64], int runs, bool do_sync,
			bool cpu)
{
	printf("\n%s\n", title);
	printf("%-18s %16s %18s %7s", "case", "host io_uring", "device io_uring", "ratio");
	if (do_sync)
		printf(" %18s %7s", "device sync", "ratio");
	printf("\n");
	for (size_t ci = 0; ci < NCASES; ci++) {
		const struct bcase *c = &cases[ci];
		double h = med_of(res[ci][0], runs, cpu), du = med_of(res[ci][1], runs, cpu);
		char hb[32], ub[32];
		fmt_val(hb, sizeof(hb), c, h);
		fmt_val(ub, sizeof(ub), c, du);
		printf("%-18s %16s %18s %6.1f%%", c->name, hb, ub, 100 * du / h);
		if (do_sync) {
			double ds = med_of(res[ci][2], runs, cpu);
			char sb[32];
			fmt_val(sb, sizeof(sb), c, ds);
			printf(" %18s %6.1f%%", sb, 100 * ds / h);
		}
		printf("\n");
	}
}

int main(int argc, char **argv)
{
	double secs = 2;
	int runs = 5;
	const char *file = NULL;
	bool do_sync = true;
	int cpu = -1;
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "file", required_argument, NULL, 'f' },
		{ "no-sync", no_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "s:r:f:nc:h", opts, NULL)) != -1) {
		switch (o) {
		case 's': secs = atof(optarg); break;
		case 'r': runs = atoi(optarg); break;
		case 'f': file = optarg; break;
		case 'n': do_sync = false; break;
		case 'c': cpu = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || secs <= 0 || runs < 1 || runs > 64) {
		usage(stderr);
		return 2;
	}

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("cannot pin to CPU %d: %s", cpu, strerror(errno));
	}
	uint64_t size = prepare_file(file ? file : DEFAULT_FILE, !file);
	const char *path = file ? file : DEFAULT_FILE;

	struct guest_mem host_mem, dev_mem;
	int r = arch_ram_init(&host_mem, GUEST_MEM);
	if (r == 0)
		r = arch_ram_init(&dev_mem, GUEST_MEM);
	if (r < 0)
		die("gm_init: %s", strerror(-r));
	/* Touch every page now so no run pays the first faults. */
	memset(host_mem.host, 0, GUEST_MEM);
	memset(dev_mem.host, 0, GUEST_MEM);

	verify_dev(path, size, false, &dev_mem);
	if (do_sync)
		verify_dev(path, size, true, &dev_mem);

	if (cpu >= 0)
		printf("pinned to CPU %d\n", cpu);
	printf("%d runs x %.1f s per case and side, medians; host = io_uring on the file, "
	       "device = virtio-blk request engine + synthetic driver\n", runs, secs);
	fflush(stdout);

	struct result res[NCASES][3][64];
	for (size_t ci = 0; ci < NCASES; ci++) {
		const struct bcase *c = &cases[ci];
		/* Warm-up, not counted. */
		run_host(path, size, c, 1000, secs / 4, &host_mem);
		run_dev(path, size, c, 1000, secs / 4, false, &dev_mem);
		for (int k = 0; k < runs; k++) {
			res[ci][0][k] = run_host(path, size, c, k, secs, &host_mem);
			res[ci][1][k] = run_dev(path, size, c, k, secs, false, &dev_mem);
			if (do_sync)
				res[ci][2][k] = run_dev(path, size, c, k, secs, true, &dev_mem);
			printf("  %s run %d: host %.0f (%.0f/cpu-s), device io_uring %.0f (%.0f/cpu-s)",
			       c->name, k + 1, res[ci][0][k].wall, res[ci][0][k].cpu,
			       res[ci][1][k].wall, res[ci][1][k].cpu);
			if (do_sync)
				printf(", device sync %.0f (%.0f/cpu-s)", res[ci][2][k].wall,
				       res[ci][2][k].cpu);
			printf(" req/s\n");
			fflush(stdout);
		}
	}

	print_table("wall clock: requests completed / elapsed time", res, runs, do_sync, false);
	print_table("CPU-normalised: requests completed / process CPU time (robust to a "
		    "busy host)", res, runs, do_sync, true);
	printf("targets: 4K randread >= 90%% of host IOPS, 1M seqread >= 95%% of host MB/s "
	       "(MB = 10^6 bytes)\n");

	gm_release(&host_mem);
	gm_release(&dev_mem);
	return 0;
}
