/*
 * microvm_restore(): read and check a snapshot's state tree, build a VM with
 * the saved configuration, map its RAM copy-on-write from the memory file
 * (layering diff snapshots on their base), load vCPU, irqchip and device
 * state, and start it running or paused.
 */
#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "abi.h"
#include "arch/x86_64/state.h"
#include "errbuf.h"
#include "file.h"
#include "snapshot/snapshot.h"
#include "snapshot/state.h"
#include "virtio/devices.h"
#include "vm.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

struct rctx {
	char *err;
	size_t errlen;
};

/* Record the message for the caller's error buffer and return @e. */
#define fail(c, e, ...) errbuf_fail((c)->err, (c)->errlen, (e), __VA_ARGS__)

/* Open a file of a snapshot: a regular file, or an error at once (a FIFO
 * from an untrusted snapshot directory must not block us). */
static int open_snapshot_file(struct rctx *c, const char *path, struct stat *st)
{
	int fd = file_open_regular(path, O_RDONLY, st);
	if (fd == -EINVAL)
		return fail(c, -EINVAL, "%s: not a regular file", path);
	if (fd < 0 && fd != -ENOENT)
		return fail(c, fd, "%s: %s", path, strerror(-fd));
	return fd;
}

/* Read and verify <dir>/state.dtb into a malloc'd blob. */
static int read_state(struct rctx *c, const char *dir, void **out, size_t *len)
{
	char path[PATH_MAX];
	struct stat st;
	if (stat(dir, &st) < 0)
		return fail(c, -errno, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(c, -EINVAL, "%s: not a snapshot directory", dir);
	if (snprintf(path, sizeof(path), "%s/" SNAPSHOT_STATE_FILE, dir) >= (int)sizeof(path))
		return fail(c, -ENAMETOOLONG, "%s: path too long", dir);
	int fd = open_snapshot_file(c, path, &st);
	if (fd == -ENOENT)
		return fail(c, -EINVAL, "%s: not a snapshot (no " SNAPSHOT_STATE_FILE ")", dir);
	if (fd < 0)
		return fd;
	int r = 0;
	void *blob = NULL;
	if (st.st_size <= 0 || (uint64_t)st.st_size > SNAPSHOT_STATE_MAX) {
		r = fail(c, -EINVAL, "%s: %lld bytes: not a snapshot state file", path,
			 (long long)st.st_size);
	} else if (!(blob = malloc((size_t)st.st_size))) {
		r = fail(c, -ENOMEM, "out of memory");
	} else {
		ssize_t n = pread(fd, blob, (size_t)st.st_size, 0);
		if (n != st.st_size)
			r = fail(c, n < 0 ? -errno : -EINVAL, "%s: short read", path);
	}
	close(fd);
	if (r == 0) {
		char e[200];
		r = st_verify(blob, (size_t)st.st_size, e, sizeof(e));
		if (r < 0)
			fail(c, r, "%s: %s", path, e);
	}
	if (r < 0) {
		free(blob);
		return r;
	}
	*out = blob;
	*len = (size_t)st.st_size;
	return 0;
}

/* Compatibility is the format version's alone: the library version the
 * snapshot records ("library-major", "library-version") is information. */
static int check_header(struct rctx *c, const void *fdt)
{
	uint32_t fmt;
	int r = st_get_u32(fdt, 0, "format-version", &fmt, c->err, c->errlen);
	if (r < 0)
		return r;
	if (fmt != SNAPSHOT_FORMAT_VERSION)
		return fail(c, -EINVAL, "snapshot format version %u: this library reads version %d",
			    fmt, SNAPSHOT_FORMAT_VERSION);
	const char *arch = st_get_str(fdt, 0, "arch");
	if (!arch || strcmp(arch, "x86_64"))
		return fail(c, -EINVAL, "snapshot architecture %s, this host is x86_64",
			    arch ? arch : "(missing)");
	return 0;
}

/* ----------------------------------------------------------------- memory */

static int open_memory(struct rctx *c, const char *dir, const void *fdt, int mach, uint64_t size,
		       uint32_t flags, int depth, struct guest_mem *m);

/* Apply the diff snapshot in @dir over @m (already holding its base). */
static int apply_diff(struct rctx *c, const char *dir, const void *fdt, int mach,
		      uint32_t flags, struct guest_mem *m)
{
	const void *bm;
	size_t bmlen, words = (size_t)((GM_PAGES(m) + 63) / 64);
	int r = st_get_var(fdt, mach, "diff-pages", &bm, &bmlen, words * 8, c->err, c->errlen);
	if (r < 0)
		return r;
	if (bmlen != words * 8)
		return fail(c, -EINVAL, "%s: diff page map has %zu bytes, expected %zu", dir, bmlen,
			    words * 8);
	uint32_t want;
	r = st_get_u32(fdt, mach, "memory-checksum", &want, c->err, c->errlen);
	if (r < 0)
		return r;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/" SNAPSHOT_MEMORY_FILE, dir);
	struct stat st;
	int fd = open_snapshot_file(c, path, &st);
	if (fd == -ENOENT)
		return fail(c, -EINVAL, "%s: missing", path);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size < m->size) {
		close(fd);
		return fail(c, -EINVAL, "%s: shorter than the guest RAM (%llu bytes)", path,
			    (unsigned long long)m->size);
	}
	uint32_t crc = 0;
	for (uint64_t pg = 0; pg < GM_PAGES(m); pg++) {
		uint64_t word;
		memcpy(&word, (const uint8_t *)bm + (pg / 64) * 8, 8);
		if (!(word & (1ULL << (pg % 64))))
			continue;
		uint8_t *dst = m->host + pg * GM_PAGE;
		ssize_t n = pread(fd, dst, GM_PAGE, (off_t)(pg * GM_PAGE));
		if (n != GM_PAGE) {
			close(fd);
			return fail(c, n < 0 ? -errno : -EIO, "%s: reading page %llu failed", path,
				    (unsigned long long)pg);
		}
		crc = snapshot_page_crc(crc, pg, dst);
	}
	close(fd);
	if ((flags & MICROVM_RESTORE_VERIFY_MEMORY) && crc != want)
		return fail(c, -EBADMSG, "%s: memory checksum mismatch (0x%08x, expected 0x%08x)",
			    path, crc, want);
	return 0;
}

static int open_memory(struct rctx *c, const char *dir, const void *fdt, int mach, uint64_t size,
		       uint32_t flags, int depth, struct guest_mem *m)
{
	const char *base = st_get_str(fdt, mach, "diff-base");
	if (base) {
		if (depth >= SNAPSHOT_MAX_DIFF_DEPTH)
			return fail(c, -ELOOP, "%s: more than %d diff snapshots stacked", dir,
				    SNAPSHOT_MAX_DIFF_DEPTH);
		void *bfdt = NULL;
		size_t blen;
		int r = read_state(c, base, &bfdt, &blen);
		int bmach = r < 0 ? r : st_sub(bfdt, 0, "machine", c->err, c->errlen);
		uint64_t bsize = 0;
		if (bmach >= 0)
			r = st_get_u64(bfdt, bmach, "memory-size", &bsize, c->err, c->errlen);
		uint32_t want_crc = 0, base_crc = 0;
		if (r == 0 && bmach >= 0)
			r = st_get_u32(fdt, mach, "diff-base-checksum", &want_crc, c->err, c->errlen);
		if (r == 0 && bmach >= 0)
			r = st_get_u32(bfdt, 0, "checksum", &base_crc, c->err, c->errlen);
		if (r == 0 && bmach >= 0 && want_crc != base_crc)
			r = fail(c, -EINVAL, "diff base %s is not the snapshot this diff was taken "
				 "against (it was replaced)", base);
		if (r == 0 && bmach >= 0 && bsize != size)
			r = fail(c, -EINVAL, "diff base %s has %llu bytes of RAM, the diff %llu", base,
				 (unsigned long long)bsize, (unsigned long long)size);
		if (r == 0 && bmach >= 0)
			r = open_memory(c, base, bfdt, bmach, size, flags, depth + 1, m);
		if (bmach < 0 && r == 0)
			r = bmach;
		free(bfdt);
		if (r < 0)
			return r;
		return apply_diff(c, dir, fdt, mach, flags, m);
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/" SNAPSHOT_MEMORY_FILE, dir);
	struct stat st;
	int fd = open_snapshot_file(c, path, &st);
	if (fd == -ENOENT)
		return fail(c, -EINVAL, "%s: missing", path);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size < size) {
		close(fd);
		return fail(c, -EINVAL, "%s: %lld bytes, shorter than the guest RAM (%llu bytes)",
			    path, (long long)st.st_size, (unsigned long long)size);
	}
	int r = gm_map_file(m, fd, size);
	if (r < 0)
		return fail(c, r, "%s: cannot map as guest RAM: %s", path, strerror(-r));
	if (flags & MICROVM_RESTORE_PREFAULT) {
		/* Map the file's data extents (the saved non-zero pages). */
		off_t pos = 0;
		for (;;) {
			off_t d = lseek(m->fd, pos, SEEK_DATA);
			if (d < 0 || (uint64_t)d >= size)
				break;
			off_t h = lseek(m->fd, d, SEEK_HOLE);
			if (h < 0 || (uint64_t)h > size)
				h = (off_t)size;
			madvise(m->host + d, (size_t)(h - d), MADV_POPULATE_READ);
			pos = h;
		}
	}
	if (flags & MICROVM_RESTORE_VERIFY_MEMORY) {
		uint32_t want, crc = 0;
		r = st_get_u32(fdt, mach, "memory-checksum", &want, c->err, c->errlen);
		if (r < 0)
			return r;
		for (uint64_t pg = 0; pg < GM_PAGES(m); pg++)
			if (!snapshot_page_is_zero(m->host + pg * GM_PAGE))
				crc = snapshot_page_crc(crc, pg, m->host + pg * GM_PAGE);
		if (crc != want)
			return fail(c, -EBADMSG, "%s: memory checksum mismatch (0x%08x, expected "
				    "0x%08x)", path, crc, want);
	}
	return 0;
}

/* ------------------------------------------------------------ configure */

/* Apply the saved machine configuration (and the caller's overrides) to a
 * new, CONFIGURED VM. */
static int configure(struct rctx *c, struct microvm *vm, const void *fdt,
		     const microvm_restore_config *cfg)
{
	int mach = st_sub(fdt, 0, "machine", c->err, c->errlen);
	if (mach < 0)
		return mach;
	uint32_t vcpus, acpi, ctype, rng;
	uint64_t msize;
	int r = st_get_u32(fdt, mach, "vcpus", &vcpus, c->err, c->errlen);
	if (!r) r = st_get_u64(fdt, mach, "memory-size", &msize, c->err, c->errlen);
	if (!r) r = st_get_u32(fdt, mach, "acpi", &acpi, c->err, c->errlen);
	if (!r) r = st_get_u32(fdt, mach, "console-type", &ctype, c->err, c->errlen);
	if (!r) r = st_get_u32(fdt, mach, "rng", &rng, c->err, c->errlen);
	if (r < 0)
		return r;
	if (msize == 0 || msize % MIB)
		return fail(c, -EINVAL, "snapshot memory size %llu is not a whole number of MiB",
			    (unsigned long long)msize);
#define SET(call)                                                              \
	do {                                                                   \
		int e_ = (call);                                               \
		if (e_ < 0)                                                    \
			return fail(c, e_, "%s", microvm_last_error(vm));      \
	} while (0)
	if (cfg->log_fn || cfg->log_level)
		SET(microvm_set_log(vm, cfg->log_fn, cfg->log_opaque,
				    cfg->log_level ? cfg->log_level : MICROVM_LOG_WARN));
	if (cfg->kick_signal)
		SET(microvm_set_kick_signal(vm, cfg->kick_signal));
	SET(microvm_set_vcpus(vm, vcpus));
	SET(microvm_set_memory(vm, msize / MIB));
	SET(microvm_set_acpi(vm, acpi != 0));
	SET(microvm_set_console_type(vm, ctype));
	SET(microvm_set_rng(vm, rng != 0));
	SET(microvm_set_console(vm, cfg->console_in, cfg->console_out));

	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	if (st_get_u64(fdt, mach, "vsock-cid", &vc.guest_cid, c->err, c->errlen) == 0) {
		if (cfg->vsock_cid)
			vc.guest_cid = cfg->vsock_cid;
		vc.uds_path = cfg->vsock_uds_path ? cfg->vsock_uds_path
						  : st_get_str(fdt, mach, "vsock-uds-path");
		SET(microvm_set_vsock(vm, &vc));
	}

	/* Disks, in device order (they take the first virtio slots). */
	uint32_t disk = 0;
	for (uint32_t i = 0; i < VIRTIO_MMIO_MAX_DEVICES; i++) {
		char name[16];
		snprintf(name, sizeof(name), "virtio@%u", i);
		int n = fdt_subnode_offset(fdt, 0, name);
		if (n < 0)
			break;
		uint32_t id;
		r = st_get_u32(fdt, n, "device-id", &id, c->err, c->errlen);
		if (r < 0)
			return r;
		if (id != 2)
			continue;
		int dn = st_sub(fdt, n, "device", c->err, c->errlen);
		if (dn < 0)
			return dn;
		uint32_t ro, sync;
		const char *path = st_get_str(fdt, dn, "path");
		r = st_get_u32(fdt, dn, "read-only", &ro, c->err, c->errlen);
		if (!r) r = st_get_u32(fdt, dn, "backend-sync", &sync, c->err, c->errlen);
		if (r < 0)
			return r;
		if (disk < cfg->n_disks && cfg->disk_paths && cfg->disk_paths[disk])
			path = cfg->disk_paths[disk];
		if (!path)
			return fail(c, -EINVAL, "state %s/device/path: missing", name);
		char serial[21] = "";
		const void *sp;
		size_t sl;
		if (st_get_var(fdt, dn, "serial", &sp, &sl, 20, c->err, c->errlen) == 0)
			memcpy(serial, sp, sl);
		microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
		dc.path = path;
		dc.serial = serial[0] ? serial : NULL;
		dc.flags = (ro ? MICROVM_DISK_READ_ONLY : 0) | (sync ? MICROVM_DISK_BACKEND_SYNC : 0);
		SET(microvm_add_disk(vm, &dc));
		disk++;
	}
#undef SET
	return 0;
}

/* ---------------------------------------------------------------- build */

static int load_devices(struct rctx *c, struct microvm *vm, const void *fdt)
{
	int dev = st_sub(fdt, 0, "devices", c->err, c->errlen);
	if (dev < 0)
		return dev;
	int n = st_sub(fdt, dev, "serial", c->err, c->errlen);
	int r = n < 0 ? n : serial_load(&vm->serial, fdt, n, c->err, c->errlen);
	if (r == 0) {
		n = st_sub(fdt, dev, "i8042", c->err, c->errlen);
		r = n < 0 ? n : i8042_load(&vm->i8042, fdt, n, c->err, c->errlen);
	}
	if (r == 0) {
		n = st_sub(fdt, dev, "rtc", c->err, c->errlen);
		r = n < 0 ? n : rtc_load(&vm->rtc, fdt, n, c->err, c->errlen);
	}
	for (uint32_t i = 0; r == 0 && i < VIRTIO_MMIO_MAX_DEVICES; i++) {
		char name[16];
		snprintf(name, sizeof(name), "virtio@%u", i);
		n = fdt_subnode_offset(fdt, 0, name);
		if (n < 0 && i < vm->nr_virtio)
			return fail(c, -EINVAL, "state: the restored VM has virtio device %u (%s), "
				    "the snapshot does not", i, vm->virtio[i]->ops->name);
		if (n < 0)
			break;
		if (i >= vm->nr_virtio)
			return fail(c, -EINVAL, "state %s: a device the restored VM does not have",
				    name);
		r = virtio_mmio_load(vm->virtio[i], fdt, n, c->err, c->errlen);
	}
	return r;
}

static int build(struct rctx *c, struct microvm *vm, const char *dir, const void *fdt,
		 uint32_t flags)
{
	int mach = st_sub(fdt, 0, "machine", c->err, c->errlen);
	if (mach < 0)
		return mach;
	int r = open_memory(c, dir, fdt, mach, vm->mem_mib * MIB, flags, 0, &vm->mem);
	if (r < 0)
		return r;
	vm->dirty_tracking = flags & MICROVM_RESTORE_TRACK_DIRTY;
	if (vm->dirty_tracking && gm_track_dirty(&vm->mem) < 0)
		return fail(c, -ENOMEM, "out of memory");
#define STEP(call)                                                     \
	do {                                                           \
		int e_ = (call);                                       \
		if (e_ < 0)                                            \
			return fail(c, e_, "%s", microvm_last_error(vm)); \
	} while (0)
	STEP(vm_kvm_open(vm));
	STEP(vm_kvm_create(vm));
	int kn = st_sub(fdt, 0, "kvm", c->err, c->errlen);
	if (kn < 0)
		return kn;
	r = x86_vm_load(vm->vm_fd, fdt, kn, c->err, c->errlen);
	if (r < 0)
		return r;
	STEP(virtio_devices_add(vm));
	STEP(vm_vcpus_create(vm, 0, true));
	for (uint32_t i = 0; i < vm->nr_vcpus; i++) {
		char name[16];
		snprintf(name, sizeof(name), "vcpu@%u", i);
		int vn = st_sub(fdt, 0, name, c->err, c->errlen);
		if (vn < 0)
			return vn;
		char e[200];
		r = x86_vcpu_load(vm->kvm_fd, vm->vcpus[i].fd, fdt, vn, e, sizeof(e));
		if (r < 0)
			return fail(c, r, "vCPU %u: %s", i, e);
	}
	STEP(vm_devices_start(vm));
	r = load_devices(c, vm, fdt);
	if (r < 0)
		return r;
	close(vm->kvm_fd);
	vm->kvm_fd = -1;
	STEP(vm_threads_start(vm, flags & MICROVM_RESTORE_PAUSED));
#undef STEP
	return 0;
}

#define KNOWN_RESTORE_FLAGS                                                     \
	(MICROVM_RESTORE_PAUSED | MICROVM_RESTORE_VERIFY_MEMORY | MICROVM_RESTORE_PREFAULT | \
	 MICROVM_RESTORE_TRACK_DIRTY)

MICROVM_API int microvm_restore(microvm **out, const char *dir, const microvm_restore_config *cfg,
				char *errbuf, size_t errlen)
{
	char local[256];
	struct rctx c = { errbuf && errlen ? errbuf : local, errbuf && errlen ? errlen : sizeof(local) };
	c.err[0] = '\0';
	if (!out)
		return fail(&c, -EINVAL, "restore: out is NULL");
	*out = NULL;
	if (!dir || !*dir)
		return fail(&c, -EINVAL, "restore: no directory given");
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	if (cfg && abi_copy_in(&rc, sizeof(rc), cfg, ABI_RESTORE_CONFIG_MIN,
			       "restore: microvm_restore_config", c.err, c.errlen) < 0)
		return -EINVAL;
	cfg = &rc;
	if (cfg->flags & ~KNOWN_RESTORE_FLAGS)
		return fail(&c, -EINVAL, "restore: unknown flags 0x%x",
			    cfg->flags & ~KNOWN_RESTORE_FLAGS);
	if (cfg->n_disks > MICROVM_RESTORE_MAX_DISKS)
		return fail(&c, -EINVAL, "restore: %u disk paths, at most %d", cfg->n_disks,
			    MICROVM_RESTORE_MAX_DISKS);

	void *fdt = NULL;
	size_t len;
	int r = read_state(&c, dir, &fdt, &len);
	if (r == 0)
		r = check_header(&c, fdt);
	struct microvm *vm = NULL;
	if (r == 0 && (r = microvm_create(&vm)) < 0)
		fail(&c, r, "restore: creating the VM: %s", strerror(-r));
	if (r == 0)
		r = configure(&c, vm, fdt, cfg);
	if (r == 0) {
		pthread_mutex_lock(&vm->api_lock);
		r = build(&c, vm, dir, fdt, cfg->flags);
		if (r == 0) {
			char *abs = realpath(dir, NULL);
			free(vm->snap_base);
			vm->snap_base = abs;
			st_get_u32(fdt, 0, "checksum", &vm->snap_base_crc, c.err, c.errlen);
		} else {
			vm_start_rollback(vm);
		}
		pthread_mutex_unlock(&vm->api_lock);
	}
	free(fdt);
	if (r < 0) {
		microvm_destroy(vm);
		return r;
	}
	vm_info(vm, "restored from %s", dir);
	vm_notify(vm);
	*out = vm;
	return 0;
}
