/*
 * Unit tests for virtio-blk (lib/virtio/blk.c) and its I/O backends
 * (lib/backend/), no /dev/kvm:
 *  - microvm_add_disk()/microvm_disk_backend() argument and file checks on a
 *    VM that is never started;
 *  - the request engine driven directly (blk_process_queue/blk_complete) by
 *    a small fake driver that builds split rings in 16 MiB of guest memory
 *    (gm_init), with the sync backend and with io_uring.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microvm.h>

#include "arch/arch.h"
#include "memory.h"
#include "virtio/blk.h"
#include "virtio/queue.h"

#define GUEST_MEM (16 * MIB)
#define QSZ 1024
#define DESC_GPA 0x10000ULL
#define AVAIL_GPA 0x20000ULL
#define USED_GPA 0x30000ULL
#define HEAP_GPA 0x100000ULL
#define IMAGE_SECTORS 2048 /* 1 MiB */

#define F_NEXT 1
#define F_WRITE 2

/* ------------------------------------------------------------ fake driver */

struct fx {
	uint32_t flags; /* MICROVM_DISK_* for blk_open */
	char path[64];
	int fd;         /* the test's own descriptor on the image */
	struct guest_mem mem;
	struct virtq q;
	uint16_t avail_idx;
	uint16_t next_desc;
	uint64_t heap;  /* bump allocator for request buffers */
	struct virtio_blk *b;
};

/* Image byte at @off: a pattern that differs between sectors. */
static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 7 + off / 512 * 13 + 1);
}

static void make_image(struct fx *f, uint64_t bytes)
{
	snprintf(f->path, sizeof(f->path), "/tmp/microvm-unit-blk-XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	uint8_t *buf = malloc(bytes);
	assert_non_null(buf);
	for (uint64_t i = 0; i < bytes; i++)
		buf[i] = pattern(i);
	assert_int_equal(pwrite(f->fd, buf, bytes, 0), (ssize_t)bytes);
	free(buf);
}

static void *gp(struct fx *f, uint64_t gpa, uint64_t len)
{
	void *p = gm_ptr(&f->mem, gpa, len);
	assert_non_null(p);
	return p;
}

static uint64_t galloc(struct fx *f, uint64_t len)
{
	uint64_t at = f->heap;
	f->heap = (f->heap + len + 15) & ~15ULL;
	assert_true(f->heap < GUEST_MEM);
	return at;
}

static int fx_setup(struct fx *f, uint32_t flags, const char *serial)
{
	memset(f, 0, sizeof(*f));
	f->flags = flags;
	make_image(f, IMAGE_SECTORS * 512);
	assert_int_equal(arch_ram_init(&f->mem, GUEST_MEM), 0);
	f->q.mem = &f->mem;
	f->q.size = QSZ;
	f->q.desc_gpa = DESC_GPA;
	f->q.avail_gpa = AVAIL_GPA;
	f->q.used_gpa = USED_GPA;
	assert_int_equal(virtq_activate(&f->q), 0);
	f->q.ready = true;
	f->heap = HEAP_GPA;
	char err[256];
	int r = blk_open(NULL, f->path, flags, serial, &f->b, err, sizeof(err));
	if (r < 0)
		fail_msg("blk_open: %d %s", r, err);
	return 0;
}

static void fx_teardown(struct fx *f)
{
	blk_free(f->b);
	gm_release(&f->mem);
	close(f->fd);
	unlink(f->path);
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool writable;
};

/* Put a chain of @n descriptors in the ring and make it available. */
static uint16_t add_chain(struct fx *f, const struct seg *s, unsigned n)
{
	uint16_t head = f->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % QSZ);
		uint8_t *d = gp(f, DESC_GPA + 16ULL * idx, 16);
		uint16_t flags = (uint16_t)((s[i].writable ? F_WRITE : 0) | (i + 1 < n ? F_NEXT : 0));
		uint16_t next = (uint16_t)((idx + 1) % QSZ);
		memcpy(d, &s[i].gpa, 8);
		memcpy(d + 8, &s[i].len, 4);
		memcpy(d + 12, &flags, 2);
		memcpy(d + 14, &next, 2);
	}
	f->next_desc = (uint16_t)((head + n) % QSZ);
	uint16_t *ring = gp(f, AVAIL_GPA + 4 + 2ULL * (f->avail_idx % QSZ), 2);
	*ring = head;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	f->avail_idx++;
	uint16_t *idx = gp(f, AVAIL_GPA + 2, 2);
	*idx = f->avail_idx;
	return head;
}

static uint64_t put_header(struct fx *f, uint32_t type, uint64_t sector)
{
	uint64_t h = galloc(f, 16);
	uint8_t *p = gp(f, h, 16);
	uint32_t reserved = 0;
	memcpy(p, &type, 4);
	memcpy(p + 4, &reserved, 4);
	memcpy(p + 8, &sector, 8);
	return h;
}

/* A status byte preset to 0xee ("not written"). */
static uint64_t put_status(struct fx *f)
{
	uint64_t s = galloc(f, 1);
	*(uint8_t *)gp(f, s, 1) = 0xee;
	return s;
}

static uint8_t status_at(struct fx *f, uint64_t gpa)
{
	return *(uint8_t *)gp(f, gpa, 1);
}

/* The usual request: header, one data buffer (if @len), status. */
struct req {
	uint16_t head;
	uint64_t data;
	uint64_t status;
};

static struct req simple_req(struct fx *f, uint32_t type, uint64_t sector, uint32_t len,
			     bool data_writable)
{
	struct req r;
	uint64_t h = put_header(f, type, sector);
	r.data = len ? galloc(f, len) : 0;
	r.status = put_status(f);
	struct seg s[3];
	unsigned n = 0;
	s[n++] = (struct seg){ h, 16, false };
	if (len)
		s[n++] = (struct seg){ r.data, len, data_writable };
	s[n++] = (struct seg){ r.status, 1, true };
	r.head = add_chain(f, s, n);
	return r;
}

static uint16_t used_idx(struct fx *f)
{
	return __atomic_load_n((uint16_t *)gp(f, USED_GPA + 2, 2), __ATOMIC_ACQUIRE);
}

static void used_elem(struct fx *f, uint16_t i, uint32_t *id, uint32_t *len)
{
	uint8_t *e = gp(f, USED_GPA + 4 + 8ULL * (i % QSZ), 8);
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
}

/* Hand everything available to the device and wait until @want used
 * entries exist in total. */
static void run_until(struct fx *f, uint16_t want)
{
	assert_true(blk_process_queue(f->b, &f->q) >= 0);
	for (int spins = 0; used_idx(f) != want; spins++) {
		if (spins > 20000)
			fail_msg("only %u of %u requests completed", used_idx(f), want);
		int efd = blk_event_fd(f->b);
		if (efd >= 0) {
			struct pollfd p = { .fd = efd, .events = POLLIN };
			poll(&p, 1, 100);
		}
		assert_true(blk_complete(f->b, true) >= 0);
	}
	(void)blk_pushed(f->b);
}

/* Run one request and check its used element. */
static void run_one(struct fx *f, struct req r, uint8_t want_status, uint32_t want_len)
{
	uint16_t before = used_idx(f);
	run_until(f, (uint16_t)(before + 1));
	uint32_t id, len;
	used_elem(f, before, &id, &len);
	assert_int_equal(id, r.head);
	assert_int_equal(len, want_len);
	if (want_len > 0)
		assert_int_equal(status_at(f, r.status), want_status);
}

static void check_guest_pattern(struct fx *f, uint64_t gpa, uint64_t file_off, uint64_t len)
{
	const uint8_t *p = gp(f, gpa, len);
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != pattern(file_off + i))
			fail_msg("guest byte %llu of the read differs", (unsigned long long)i);
}

/* --------------------------------------------------------- state helpers */

static uint32_t backend_flags[] = { MICROVM_DISK_BACKEND_SYNC, 0 };

static int setup_rw(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	fx_setup(f, *(uint32_t *)*state, "test-serial");
	*state = f;
	return 0;
}

static int setup_ro(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	fx_setup(f, *(uint32_t *)*state | MICROVM_DISK_READ_ONLY, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	fx_teardown(f);
	free(f);
	return 0;
}

static bool is_uring(struct fx *f)
{
	return strcmp(blk_backend_name(f->b), "io_uring") == 0;
}

/* ------------------------------------------------- public API: add_disk */

static char image_path[64], small_path[64], fifo_path[96], dir_path[64], missing_path[96];

static void temp_file(char *path, size_t len, size_t bytes)
{
	snprintf(path, len, "/tmp/microvm-unit-blk-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)bytes), 0);
	close(fd);
}

static int files_setup(void **state)
{
	(void)state;
	temp_file(image_path, sizeof(image_path), 64 * 1024 + 100); /* 128 sectors + tail */
	temp_file(small_path, sizeof(small_path), 100);
	snprintf(dir_path, sizeof(dir_path), "/tmp/microvm-unit-blk-dir-XXXXXX");
	assert_non_null(mkdtemp(dir_path));
	snprintf(fifo_path, sizeof(fifo_path), "%s/fifo", dir_path);
	assert_int_equal(mkfifo(fifo_path, 0600), 0);
	snprintf(missing_path, sizeof(missing_path), "/tmp/microvm-unit-blk-missing-%ld",
		 (long)getpid());
	unlink(missing_path);
	return 0;
}

static int files_teardown(void **state)
{
	(void)state;
	unlink(image_path);
	unlink(small_path);
	unlink(fifo_path);
	rmdir(dir_path);
	return 0;
}

static int open_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void assert_error_mentions(const microvm *vm, const char *needle)
{
	const char *e = microvm_last_error(vm);
	if (!strstr(e, needle))
		fail_msg("last error \"%s\" does not mention \"%s\"", e, needle);
}

static int add(microvm *vm, const char *path, uint32_t flags, const char *serial)
{
	microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
	cfg.path = path;
	cfg.flags = flags;
	cfg.serial = serial;
	return microvm_add_disk(vm, &cfg);
}

static void test_add_disk_arguments(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	microvm_disk_config cfg = MICROVM_DISK_CONFIG_INIT;
	cfg.path = image_path;

	assert_int_equal(microvm_add_disk(NULL, &cfg), -EINVAL);
	assert_int_equal(microvm_add_disk(vm, NULL), -EINVAL);
	cfg.size = sizeof(cfg) - 1;
	assert_int_equal(microvm_add_disk(vm, &cfg), -EINVAL);
	assert_error_mentions(vm, "size");
	cfg.size = 0;
	assert_int_equal(microvm_add_disk(vm, &cfg), -EINVAL);
	cfg.size = sizeof(cfg);
	cfg.flags = 0x80;
	assert_int_equal(microvm_add_disk(vm, &cfg), -EINVAL);
	assert_error_mentions(vm, "flags");
	cfg.flags = 0;
	cfg.path = NULL;
	assert_int_equal(microvm_add_disk(vm, &cfg), -EINVAL);
	assert_error_mentions(vm, "path");

	/* Serial: 21 bytes is one too many, 20 is fine. */
	assert_int_equal(add(vm, image_path, 0, "123456789012345678901"), -EINVAL);
	assert_error_mentions(vm, image_path);
	assert_error_mentions(vm, "serial");

	/* Files that cannot be disks. */
	assert_int_equal(add(vm, missing_path, 0, NULL), -ENOENT);
	assert_error_mentions(vm, missing_path);
	assert_int_equal(add(vm, dir_path, 0, NULL), -EINVAL);
	assert_error_mentions(vm, dir_path);
	assert_int_equal(add(vm, dir_path, MICROVM_DISK_READ_ONLY, NULL), -EINVAL);
	assert_error_mentions(vm, dir_path);
	assert_int_equal(add(vm, fifo_path, 0, NULL), -EINVAL);
	assert_error_mentions(vm, fifo_path);
	assert_int_equal(add(vm, small_path, 0, NULL), -EINVAL);
	assert_error_mentions(vm, small_path);
	assert_error_mentions(vm, "100 bytes");
	assert_int_equal(add(vm, "/dev/null", 0, NULL), -EINVAL);
	/* No failed call left a disk behind. */
	assert_null(microvm_disk_backend(vm, 0));

	/* Good disks get indices 0, 1, 2... in order. */
	assert_int_equal(add(vm, image_path, 0, "12345678901234567890"), 0);
	assert_int_equal(add(vm, image_path, MICROVM_DISK_READ_ONLY, NULL), 1);
	assert_int_equal(add(vm, image_path, MICROVM_DISK_BACKEND_SYNC, "s"), 2);
	const char *b0 = microvm_disk_backend(vm, 0);
	assert_non_null(b0);
	assert_true(strcmp(b0, "io_uring") == 0 || strcmp(b0, "sync") == 0);
	assert_string_equal(microvm_disk_backend(vm, 2), "sync");
	assert_null(microvm_disk_backend(vm, 3));
	assert_null(microvm_disk_backend(vm, UINT32_MAX));
	assert_null(microvm_disk_backend(NULL, 0));
	microvm_destroy(vm);
}

static void test_add_disk_too_many(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	int i, r = 0;
	for (i = 0; i < 40 && (r = add(vm, image_path, MICROVM_DISK_BACKEND_SYNC, NULL)) >= 0; i++)
		assert_int_equal(r, i);
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(i, 16);
	assert_error_mentions(vm, image_path);
	microvm_destroy(vm);
}

static void test_add_disk_closes_files(void **state)
{
	(void)state;
	int before = open_fd_count();
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(add(vm, image_path, 0, NULL), 0);
	assert_int_equal(add(vm, image_path, MICROVM_DISK_READ_ONLY, NULL), 1);
	assert_int_equal(add(vm, image_path, MICROVM_DISK_BACKEND_SYNC, NULL), 2);
	assert_true(open_fd_count() > before);
	microvm_destroy(vm);
	assert_int_equal(open_fd_count(), before);
}

static void test_add_disk_read_only_file(void **state)
{
	(void)state;
	if (geteuid() == 0)
		skip(); /* root opens a 0444 file for writing anyway */
	char path[64];
	temp_file(path, sizeof(path), 4096);
	assert_int_equal(chmod(path, 0444), 0);
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(add(vm, path, 0, NULL), -EACCES);
	assert_error_mentions(vm, path);
	assert_int_equal(add(vm, path, MICROVM_DISK_READ_ONLY, NULL), 0);
	microvm_destroy(vm);
	unlink(path);
}

static char fallback_log[512];

static void capture_log(void *opaque, int level, const char *msg)
{
	(void)opaque;
	if (level <= MICROVM_LOG_WARN && strstr(msg, "io_uring"))
		snprintf(fallback_log, sizeof(fallback_log), "%s", msg);
}

/* When io_uring cannot be set up (here: no file descriptor left for the
 * ring), the disk falls back to the sync backend and says so in the log. */
static void test_add_disk_uring_fallback(void **state)
{
	(void)state;
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_log(vm, capture_log, NULL, MICROVM_LOG_WARN), 0);
	int next = open("/dev/null", O_RDONLY | O_CLOEXEC); /* lowest free fd */
	assert_true(next >= 0);
	close(next);
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)next + 1; /* room for the image only */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	fallback_log[0] = 0;
	int r = add(vm, image_path, 0, NULL);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(r, 0);
	assert_string_equal(microvm_disk_backend(vm, 0), "sync");
	if (!strstr(fallback_log, image_path) || !strstr(fallback_log, "sync"))
		fail_msg("fallback not logged: \"%s\"", fallback_log);
	microvm_destroy(vm);
}

/* ------------------------------------------------------ config + engine */

static void test_config_space(void **state)
{
	struct fx *f = *state;
	bool ro = f->flags & MICROVM_DISK_READ_ONLY;
	uint8_t cfg[VIRTIO_BLK_CFG_SIZE];
	blk_config_read(f->b, 0, cfg, sizeof(cfg));
	uint64_t cap;
	uint32_t seg_max, blk_size, max_discard_seg;
	memcpy(&cap, cfg + VIRTIO_BLK_CFG_CAPACITY, 8);
	memcpy(&seg_max, cfg + VIRTIO_BLK_CFG_SEG_MAX, 4);
	memcpy(&blk_size, cfg + VIRTIO_BLK_CFG_BLK_SIZE, 4);
	memcpy(&max_discard_seg, cfg + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 4);
	assert_int_equal(cap, IMAGE_SECTORS);
	assert_int_equal(blk_capacity(f->b), IMAGE_SECTORS);
	assert_int_equal(seg_max, VIRTIO_BLK_SEG_MAX);
	assert_int_equal(blk_size, 512);
	uint64_t feat = blk_features(f->b);
	assert_true(feat & (1ULL << VIRTIO_BLK_F_FLUSH));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_SEG_MAX));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_BLK_SIZE));
	assert_int_equal(!!(feat & (1ULL << VIRTIO_BLK_F_RO)), ro);
	assert_int_equal(!!(feat & (1ULL << VIRTIO_BLK_F_DISCARD)), !ro);
	assert_int_equal(!!(feat & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)), !ro);
	assert_int_equal(max_discard_seg, ro ? 0 : VIRTIO_BLK_MAX_DISCARD_SEG);
	/* Unaligned partial reads give the same bytes. */
	uint8_t part[3];
	blk_config_read(f->b, 1, part, 3);
	assert_memory_equal(part, cfg + 1, 3);
	/* Padding is zero. */
	assert_int_equal(cfg[33], 0);
	assert_int_equal(cfg[57] | cfg[58] | cfg[59], 0);
	/* The backend asked for is the one used (io_uring works on this host,
	 * or the fallback was taken: both are fine without the flag). */
	if (f->flags & MICROVM_DISK_BACKEND_SYNC) {
		assert_string_equal(blk_backend_name(f->b), "sync");
		assert_int_equal(blk_event_fd(f->b), -1);
	} else if (is_uring(f)) {
		assert_true(blk_event_fd(f->b) >= 0);
	}
}

static void test_read(void **state)
{
	struct fx *f = *state;
	struct req r = simple_req(f, VIRTIO_BLK_T_IN, 5, 4096, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 4096 + 1);
	check_guest_pattern(f, r.data, 5 * 512, 4096);
	/* The last sector of the disk. */
	r = simple_req(f, VIRTIO_BLK_T_IN, IMAGE_SECTORS - 1, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	check_guest_pattern(f, r.data, (IMAGE_SECTORS - 1) * 512ULL, 512);
	assert_int_equal(blk_in_flight(f->b), 0);
}

/* Header split in two, data in odd pieces, status sharing the last data
 * descriptor: only the byte streams matter. */
static void test_read_odd_framing(void **state)
{
	struct fx *f = *state;
	uint64_t h = put_header(f, VIRTIO_BLK_T_IN, 7);
	uint64_t d1 = galloc(f, 100), d2 = galloc(f, 412), d3 = galloc(f, 513);
	*(uint8_t *)gp(f, d3 + 512, 1) = 0xee;
	struct seg s[] = {
		{ h, 8, false }, { h + 8, 8, false },
		{ d1, 100, true }, { d2, 412, true }, { d3, 513, true },
	};
	uint16_t head = add_chain(f, s, 5);
	run_until(f, 1);
	uint32_t id, len;
	used_elem(f, 0, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, 1024 + 1);
	assert_int_equal(status_at(f, d3 + 512), VIRTIO_BLK_S_OK);
	check_guest_pattern(f, d1, 7 * 512, 100);
	check_guest_pattern(f, d2, 7 * 512 + 100, 412);
	check_guest_pattern(f, d3, 8 * 512, 512);
}

/* More data descriptors than fit in a request's inline iovec array. */
static void test_many_segments(void **state)
{
	struct fx *f = *state;
	enum { NSEG = 40 };
	struct seg s[NSEG + 2];
	uint64_t h = put_header(f, VIRTIO_BLK_T_IN, 100);
	uint64_t data = galloc(f, NSEG * 512);
	uint64_t st = put_status(f);
	s[0] = (struct seg){ h, 16, false };
	for (int i = 0; i < NSEG; i++)
		s[1 + i] = (struct seg){ data + 512ULL * i, 512, true };
	s[NSEG + 1] = (struct seg){ st, 1, true };
	struct req r = { add_chain(f, s, NSEG + 2), data, st };
	run_one(f, r, VIRTIO_BLK_S_OK, NSEG * 512 + 1);
	check_guest_pattern(f, data, 100 * 512, NSEG * 512);

	/* And write them back somewhere else. */
	h = put_header(f, VIRTIO_BLK_T_OUT, 1000);
	st = put_status(f);
	s[0] = (struct seg){ h, 16, false };
	for (int i = 0; i < NSEG; i++)
		s[1 + i] = (struct seg){ data + 512ULL * i, 512, false };
	s[NSEG + 1] = (struct seg){ st, 1, true };
	r = (struct req){ add_chain(f, s, NSEG + 2), data, st };
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	uint8_t buf[NSEG * 512];
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 1000 * 512), (ssize_t)sizeof(buf));
	for (unsigned i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], pattern(100 * 512 + i));
}

static void test_write_and_flush(void **state)
{
	struct fx *f = *state;
	struct req r = simple_req(f, VIRTIO_BLK_T_OUT, 3, 1024, false);
	uint8_t *p = gp(f, r.data, 1024);
	for (int i = 0; i < 1024; i++)
		p[i] = (uint8_t)(0xa0 ^ i);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	uint8_t buf[1024 + 2];
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 3 * 512 - 1), (ssize_t)sizeof(buf));
	assert_int_equal(buf[0], pattern(3 * 512 - 1)); /* neighbours untouched */
	assert_int_equal(buf[1025], pattern(5 * 512));
	for (int i = 0; i < 1024; i++)
		assert_int_equal(buf[1 + i], (uint8_t)(0xa0 ^ i));

	r = simple_req(f, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);

	/* Read back through the device. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 3, 1024, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 1025);
	p = gp(f, r.data, 1024);
	for (int i = 0; i < 1024; i++)
		assert_int_equal(p[i], (uint8_t)(0xa0 ^ i));
}

static void test_get_id(void **state)
{
	struct fx *f = *state;
	struct req r = simple_req(f, VIRTIO_BLK_T_GET_ID, 0, 20, true);
	memset(gp(f, r.data, 20), 0x55, 20);
	run_one(f, r, VIRTIO_BLK_S_OK, 21);
	char want[20] = "test-serial"; /* NUL-padded */
	assert_memory_equal(gp(f, r.data, 20), want, 20);

	/* A shorter buffer gets what fits. */
	r = simple_req(f, VIRTIO_BLK_T_GET_ID, 0, 4, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 5);
	assert_memory_equal(gp(f, r.data, 4), "test", 4);
}

static void test_get_id_no_serial(void **state)
{
	struct fx *f = *state; /* read-only fixture: no serial */
	struct req r = simple_req(f, VIRTIO_BLK_T_GET_ID, 0, 20, true);
	memset(gp(f, r.data, 20), 0x55, 20);
	run_one(f, r, VIRTIO_BLK_S_OK, 21);
	static const char zeros[20];
	assert_memory_equal(gp(f, r.data, 20), zeros, 20);
}

static void test_bad_ranges(void **state)
{
	struct fx *f = *state;
	/* Starting at the capacity. */
	struct req r = simple_req(f, VIRTIO_BLK_T_IN, IMAGE_SECTORS, 512, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* Starting inside, ending past it. */
	r = simple_req(f, VIRTIO_BLK_T_IN, IMAGE_SECTORS - 1, 1024, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* sector * 512 + len overflows 64 bits. */
	r = simple_req(f, VIRTIO_BLK_T_IN, UINT64_MAX, 512, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	r = simple_req(f, VIRTIO_BLK_T_OUT, (UINT64_MAX >> 9) + 1, 512, false);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	r = simple_req(f, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, 1024, false);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* Not a multiple of 512. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 0, 100, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	r = simple_req(f, VIRTIO_BLK_T_OUT, 0, 513, false);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* Nothing was written to the image. */
	uint8_t buf[1024];
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (unsigned i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], pattern(i));
	assert_int_equal(blk_in_flight(f->b), 0);
}

static void test_malformed_requests(void **state)
{
	struct fx *f = *state;
	/* Header shorter than 16 bytes. */
	uint64_t h = put_header(f, VIRTIO_BLK_T_IN, 0);
	uint64_t st = put_status(f);
	struct seg s1[] = { { h, 8, false }, { st, 1, true } };
	struct req r = { add_chain(f, s1, 2), 0, st };
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);

	/* No header at all, just a status byte. */
	st = put_status(f);
	struct seg s2[] = { { st, 1, true } };
	r = (struct req){ add_chain(f, s2, 1), 0, st };
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);

	/* No status byte: nothing writable. Returned unanswered (len 0). */
	h = put_header(f, VIRTIO_BLK_T_IN, 0);
	uint64_t d = galloc(f, 512);
	struct seg s3[] = { { h, 16, false }, { d, 512, false } };
	r = (struct req){ add_chain(f, s3, 2), d, 0 };
	run_one(f, r, 0, 0);

	/* Status buffer read-only: the same. */
	h = put_header(f, VIRTIO_BLK_T_FLUSH, 0);
	st = put_status(f);
	struct seg s4[] = { { h, 16, false }, { st, 1, false } };
	r = (struct req){ add_chain(f, s4, 2), 0, st };
	run_one(f, r, 0, 0);
	assert_int_equal(status_at(f, st), 0xee);

	/* Read with a device-readable data buffer. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 0, 512, false);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* Write with a device-writable data buffer. */
	r = simple_req(f, VIRTIO_BLK_T_OUT, 0, 512, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);

	/* Unknown request types. */
	r = simple_req(f, 0x42, 0, 0, false);
	run_one(f, r, VIRTIO_BLK_S_UNSUPP, 1);
	r = simple_req(f, 2 /* legacy SCSI */, 0, 512, true);
	run_one(f, r, VIRTIO_BLK_S_UNSUPP, 1);

	/* The device still works. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 1, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	check_guest_pattern(f, r.data, 512, 512);
	assert_int_equal(blk_in_flight(f->b), 0);
}

static void test_read_only(void **state)
{
	struct fx *f = *state;
	struct req r = simple_req(f, VIRTIO_BLK_T_OUT, 0, 512, false);
	memset(gp(f, r.data, 512), 0, 512);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	uint64_t seg = galloc(f, 16);
	uint8_t *p = gp(f, seg, 16);
	uint64_t sector = 0;
	uint32_t num = 8, flags = 0;
	memcpy(p, &sector, 8);
	memcpy(p + 8, &num, 4);
	memcpy(p + 12, &flags, 4);
	for (uint32_t type = VIRTIO_BLK_T_DISCARD; type <= VIRTIO_BLK_T_WRITE_ZEROES; type += 2) {
		uint64_t h = put_header(f, type, 0);
		uint64_t st = put_status(f);
		struct seg s[] = { { h, 16, false }, { seg, 16, false }, { st, 1, true } };
		r = (struct req){ add_chain(f, s, 3), 0, st };
		run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	}
	r = simple_req(f, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	r = simple_req(f, VIRTIO_BLK_T_IN, 0, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	check_guest_pattern(f, r.data, 0, 512);
	/* The image is unchanged. */
	uint8_t buf[4096];
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (unsigned i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], pattern(i));
}

/* One discard/write-zeroes request with @n segments. */
static struct req dwz_req(struct fx *f, uint32_t type, const uint64_t *sector,
			  const uint32_t *num, const uint32_t *flags, unsigned n)
{
	uint64_t h = put_header(f, type, 0);
	uint64_t segs = galloc(f, 16ULL * n);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *p = gp(f, segs + 16ULL * i, 16);
		memcpy(p, &sector[i], 8);
		memcpy(p + 8, &num[i], 4);
		memcpy(p + 12, &flags[i], 4);
	}
	uint64_t st = put_status(f);
	struct seg s[] = { { h, 16, false }, { segs, (uint32_t)(16 * n), false }, { st, 1, true } };
	return (struct req){ add_chain(f, s, 3), segs, st };
}

static void test_discard_write_zeroes(void **state)
{
	struct fx *f = *state;
	uint64_t sec[2] = { 16, 40 };
	uint32_t num[2] = { 8, 3 }, fl[2] = { 0, 0 };

	/* Write zeroes over 16..23 and 40..42 (one segment each). */
	struct req r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, &sec[0], &num[0], &fl[0], 1);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	uint32_t unmap = VIRTIO_BLK_WZ_F_UNMAP;
	r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, &sec[1], &num[1], &unmap, 1);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	uint8_t buf[50 * 512];
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (unsigned i = 0; i < sizeof(buf); i++) {
		unsigned s = i / 512;
		bool zero = (s >= 16 && s < 24) || (s >= 40 && s < 43);
		if (buf[i] != (zero ? 0 : pattern(i)))
			fail_msg("byte %u (sector %u) is 0x%02x", i, s, buf[i]);
	}
	/* Two segments in one write-zeroes request: max_write_zeroes_seg is 1. */
	r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, sec, num, fl, 2);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);

	/* Discard two ranges at once. */
	r = dwz_req(f, VIRTIO_BLK_T_DISCARD, sec, num, fl, 2);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
	/* Discard with the unmap flag, or any unknown flag: UNSUPP. */
	r = dwz_req(f, VIRTIO_BLK_T_DISCARD, sec, num, &unmap, 1);
	run_one(f, r, VIRTIO_BLK_S_UNSUPP, 1);
	uint32_t bad = 0x4;
	r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, sec, num, &bad, 1);
	run_one(f, r, VIRTIO_BLK_S_UNSUPP, 1);
	/* Out of range, too long, or a truncated segment. */
	uint64_t far = IMAGE_SECTORS - 2;
	r = dwz_req(f, VIRTIO_BLK_T_DISCARD, &far, &num[1], fl, 1);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	uint64_t huge_sector = UINT64_MAX - 1;
	r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, &huge_sector, &num[0], fl, 1);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	uint32_t too_many = VIRTIO_BLK_MAX_WZ_SECTORS + 1;
	r = dwz_req(f, VIRTIO_BLK_T_WRITE_ZEROES, sec, &too_many, fl, 1);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	uint64_t h = put_header(f, VIRTIO_BLK_T_DISCARD, 0);
	uint64_t seg = galloc(f, 8), st = put_status(f);
	struct seg s[] = { { h, 16, false }, { seg, 8, false }, { st, 1, true } };
	r = (struct req){ add_chain(f, s, 3), seg, st };
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* The rest of the image is untouched. */
	assert_int_equal(pread(f->fd, buf, 512, 15 * 512), 512);
	for (unsigned i = 0; i < 512; i++)
		assert_int_equal(buf[i], pattern(15 * 512 + i));
}

/* The image shrinks under the device: reads past the new end fail with
 * IOERR, the device keeps working. */
static void test_read_past_eof(void **state)
{
	struct fx *f = *state;
	assert_int_equal(ftruncate(f->fd, 1024 + 256), 0);
	struct req r = simple_req(f, VIRTIO_BLK_T_IN, 100, 512, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* Partly before the end: a short transfer, then end of file. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 0, 2048, true);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	/* What is still there reads fine. */
	r = simple_req(f, VIRTIO_BLK_T_IN, 1, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	check_guest_pattern(f, r.data, 512, 512);
}

/* A host write error (EFBIG from RLIMIT_FSIZE) reaches the guest as IOERR. */
static void test_host_write_error(void **state)
{
	struct fx *f = *state;
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	struct sigaction ign = { .sa_handler = SIG_IGN }, old_sa;
	assert_int_equal(sigaction(SIGXFSZ, &ign, &old_sa), 0);
	lim = old;
	lim.rlim_cur = 64 * 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct req r = simple_req(f, VIRTIO_BLK_T_OUT, 1000, 512, false);
	memset(gp(f, r.data, 512), 0x11, 512);
	run_one(f, r, VIRTIO_BLK_S_IOERR, 1);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(sigaction(SIGXFSZ, &old_sa, NULL), 0);
	/* Below the limit it worked all along; and now everywhere. */
	r = simple_req(f, VIRTIO_BLK_T_OUT, 1000, 512, false);
	memset(gp(f, r.data, 512), 0x11, 512);
	run_one(f, r, VIRTIO_BLK_S_OK, 1);
}

/* More requests than the queue depth: the device stops taking chains, and
 * takes the rest as completions free room. */
static void test_many_in_flight(void **state)
{
	struct fx *f = *state;
	enum { N = 300 };
	static struct req r[N];
	for (int i = 0; i < N; i++)
		r[i] = simple_req(f, VIRTIO_BLK_T_IN, (uint64_t)(i * 5) % IMAGE_SECTORS, 1024, true);
	int taken = blk_process_queue(f->b, &f->q);
	assert_true(taken > 0);
	if (is_uring(f)) {
		assert_int_equal(taken, VIRTIO_BLK_QUEUE_DEPTH);
		assert_true(blk_in_flight(f->b) <= VIRTIO_BLK_QUEUE_DEPTH);
	} else {
		assert_int_equal(taken, N);
	}
	run_until(f, N);
	bool seen[N] = { false };
	for (uint16_t i = 0; i < N; i++) {
		uint32_t id, len;
		used_elem(f, i, &id, &len);
		int k;
		for (k = 0; k < N && r[k].head != id; k++)
			;
		assert_true(k < N);
		assert_false(seen[k]);
		seen[k] = true;
		assert_int_equal(len, 1025);
		assert_int_equal(status_at(f, r[k].status), VIRTIO_BLK_S_OK);
		check_guest_pattern(f, r[k].data, (uint64_t)(k * 5) % IMAGE_SECTORS * 512, 1024);
	}
	assert_int_equal(blk_in_flight(f->b), 0);
}

/* Reset (and free) with requests in flight: they are waited for and
 * dropped, nothing is pushed to the old ring, nothing leaks. */
static void test_reset_in_flight(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 64; i++)
		simple_req(f, i % 2 ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_FLUSH, (uint64_t)i, 4096, true);
	int taken = blk_process_queue(f->b, &f->q);
	assert_int_equal(taken, 64);
	uint16_t pushed = used_idx(f);
	if (is_uring(f))
		assert_int_equal(pushed, 0); /* nothing reaped yet */
	blk_reset(f->b);
	assert_int_equal(blk_in_flight(f->b), 0);
	assert_int_equal(used_idx(f), pushed);
	assert_true(blk_complete(f->b, true) >= 0);
	assert_int_equal(used_idx(f), pushed);

	/* Start over like a driver after reset, then free with I/O in flight. */
	memset(gp(f, DESC_GPA, USED_GPA + 4096 - DESC_GPA), 0, USED_GPA + 4096 - DESC_GPA);
	f->avail_idx = f->next_desc = 0;
	assert_int_equal(virtq_activate(&f->q), 0);
	struct req r = simple_req(f, VIRTIO_BLK_T_IN, 9, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	check_guest_pattern(f, r.data, 9 * 512, 512);
	for (int i = 0; i < 32; i++)
		simple_req(f, VIRTIO_BLK_T_IN, (uint64_t)i * 8, 4096, true);
	assert_int_equal(blk_process_queue(f->b, &f->q), 32);
	/* teardown frees with these in flight */
}

/* A malformed ring (avail index jumps by more than the queue size) makes
 * blk_process_queue fail with -EIO (the transport then needs a reset). */
static void test_malformed_ring(void **state)
{
	struct fx *f = *state;
	struct req r = simple_req(f, VIRTIO_BLK_T_IN, 0, 512, true);
	run_one(f, r, VIRTIO_BLK_S_OK, 513);
	uint16_t *idx = gp(f, AVAIL_GPA + 2, 2);
	*idx = (uint16_t)(f->avail_idx + QSZ + 1);
	assert_int_equal(blk_process_queue(f->b, &f->q), -EIO);
	*idx = f->avail_idx;
	/* A descriptor pointing outside guest RAM. */
	uint64_t h = put_header(f, VIRTIO_BLK_T_IN, 0);
	uint64_t st = put_status(f);
	struct seg s[] = { { h, 16, false }, { 0x7fff00000000ULL, 512, true }, { st, 1, true } };
	add_chain(f, s, 3);
	assert_int_equal(blk_process_queue(f->b, &f->q), -EIO);
	assert_int_equal(status_at(f, st), 0xee);
}

/* ------------------------------------------------------------------ main */

/* Each engine test runs with the sync backend and with io_uring. */
#define BOTH(fn, setup)                                                             \
	{ #fn " [" #setup ", sync]", fn, setup, teardown, &backend_flags[0] },       \
	{ #fn " [" #setup ", io_uring]", fn, setup, teardown, &backend_flags[1] }

int main(void)
{
	const struct CMUnitTest api_tests[] = {
		cmocka_unit_test(test_add_disk_arguments),
		cmocka_unit_test(test_add_disk_too_many),
		cmocka_unit_test(test_add_disk_closes_files),
		cmocka_unit_test(test_add_disk_read_only_file),
		cmocka_unit_test(test_add_disk_uring_fallback),
	};
	const struct CMUnitTest engine_tests[] = {
		BOTH(test_config_space, setup_rw),
		BOTH(test_config_space, setup_ro),
		BOTH(test_read, setup_rw),
		BOTH(test_read_odd_framing, setup_rw),
		BOTH(test_many_segments, setup_rw),
		BOTH(test_write_and_flush, setup_rw),
		BOTH(test_get_id, setup_rw),
		BOTH(test_get_id_no_serial, setup_ro),
		BOTH(test_bad_ranges, setup_rw),
		BOTH(test_malformed_requests, setup_rw),
		BOTH(test_read_only, setup_ro),
		BOTH(test_discard_write_zeroes, setup_rw),
		BOTH(test_read_past_eof, setup_rw),
		BOTH(test_host_write_error, setup_rw),
		BOTH(test_many_in_flight, setup_rw),
		BOTH(test_reset_in_flight, setup_rw),
		BOTH(test_malformed_ring, setup_rw),
	};
	int fails = cmocka_run_group_tests_name("blk_add_disk", api_tests, files_setup,
						files_teardown);
	fails += cmocka_run_group_tests_name("blk_engine", engine_tests, NULL, NULL);
	return fails;
}
