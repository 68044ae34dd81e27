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
#include "arch/arch.h"
#include "errbuf.h"
#include "file.h"
#include "snapshot/reset.h"
#include "snapshot/snapshot.h"
#include "snapshot/state.h"
#include "virtio/devices.h"
#include "vm_devices.h"
#include "vm.h"
#include "vm_config.h"

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
	if (!arch || strcmp(arch, arch_name))
		return fail(c, -EINVAL, "snapshot architecture %s, this library is %s",
			    arch ? arch : "(missing)", arch_name);
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
	int r = arch_ram_map_file(m, fd, size);
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

/* What the caller gives the clone that the snapshot does not carry: log
 * callback, kick signal and console fds (through the setters). */
static int caller_settings(struct microvm *vm, const microvm_restore_config *cfg)
{
	int r = 0;
	if (cfg->log_fn || cfg->log_level)
		r = microvm_set_log(vm, cfg->log_fn, cfg->log_opaque,
				    cfg->log_level ? cfg->log_level : MICROVM_LOG_WARN);
	if (r == 0 && cfg->kick_signal)
		r = microvm_set_kick_signal(vm, cfg->kick_signal);
	if (r == 0 && cfg->seccomp)
		r = microvm_set_seccomp(vm, cfg->seccomp);
	if (r == 0)
		r = microvm_set_console(vm, cfg->console_in, cfg->console_out);
	if (r == 0 && (cfg->flags & MICROVM_RESTORE_EMBEDDER_LOOP))
		r = microvm_set_event_loop(vm, MICROVM_LOOP_EMBEDDER);
	return r;
}

/* Apply the saved machine configuration to a new, CONFIGURED VM, then add
 * its devices in the saved order, each from its own node with the caller's
 * per-clone overrides. */
static int configure(struct rctx *c, struct microvm *vm, const void *fdt,
		     const microvm_restore_config *cfg)
{
	int mach = st_sub(fdt, 0, "machine", c->err, c->errlen);
	if (mach < 0)
		return mach;
	int r = caller_settings(vm, cfg);
	if (r < 0)
		return fail(c, r, "%s", microvm_last_error(vm));
	r = vm_config_load(vm, fdt, mach, c->err, c->errlen);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < VIRTIO_MMIO_MAX_DEVICES; i++) {
		char name[16];
		snprintf(name, sizeof(name), "virtio@%u", i);
		int n = fdt_subnode_offset(fdt, 0, name);
		if (n < 0)
			break;
		r = virtio_restore_add(vm, fdt, n, cfg, c->err, c->errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---------------------------------------------------------------- build */

/* The start sequence's hooks for a restore (lib/vm.h): VM-wide, per-vCPU
 * and device state from the state tree. Messages are recorded on the VM. */
struct load_ctx {
	const void *fdt;
	char err[256];
};

static int load_vm(void *ctx, struct microvm *vm)
{
	struct load_ctx *l = ctx;
	int kn = st_sub(l->fdt, 0, "kvm", l->err, sizeof(l->err));
	int r = kn < 0 ? kn : arch_vm_load(vm->kvm.vm_fd, !vm->cfg.no_pit, l->fdt, kn, l->err,
						     sizeof(l->err));
	return r < 0 ? vm_error(vm, r, "%s", l->err) : 0;
}

static int load_vcpu(void *ctx, struct microvm *vm, uint32_t i)
{
	struct load_ctx *l = ctx;
	char name[16];
	snprintf(name, sizeof(name), "vcpu@%u", i);
	int vn = st_sub(l->fdt, 0, name, l->err, sizeof(l->err));
	int r = vn < 0 ? vn : arch_vcpu_load(vm->kvm.kvm_fd, vm->run.vcpus[i].fd, l->fdt, vn, l->err,
					     sizeof(l->err));
	return r < 0 ? vm_error(vm, r, "vCPU %u: %s", i, l->err) : 0;
}

/* Every virtio device of the VM (made from the snapshot's nodes, in their
 * order) takes its state from the node at its index. */
static int load_virtio(struct load_ctx *l, struct microvm *vm)
{
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++) {
		char name[24];
		snprintf(name, sizeof(name), "virtio@%u", i);
		int n = st_sub(l->fdt, 0, name, l->err, sizeof(l->err));
		int r = n < 0 ? n : virtio_mmio_load(vm->dev.virtio[i], l->fdt, n, l->err,
						     sizeof(l->err));
		if (r < 0)
			return r;
	}
	return 0;
}

/* The guest's clocks, set together once every vCPU is loaded (see
 * arch_clock_load): the last thing before the vCPUs run. */
static int load_clocks(struct load_ctx *l, struct microvm *vm)
{
	int fds[MICROVM_MAX_VCPUS], nodes[MICROVM_MAX_VCPUS];
	for (uint32_t i = 0; i < vm->cfg.nr_vcpus; i++) {
		char name[16];
		snprintf(name, sizeof(name), "vcpu@%u", i);
		fds[i] = vm->run.vcpus[i].fd;
		nodes[i] = st_sub(l->fdt, 0, name, l->err, sizeof(l->err));
		if (nodes[i] < 0)
			return nodes[i];
	}
	int kn = st_sub(l->fdt, 0, "kvm", l->err, sizeof(l->err));
	return kn < 0 ? kn : arch_clock_load(vm->kvm.vm_fd, fds, nodes, vm->cfg.nr_vcpus, l->fdt,
					     kn, &vm->kvm.known, l->err, sizeof(l->err));
}

static int load_devices(void *ctx, struct microvm *vm)
{
	struct load_ctx *l = ctx;
	int dev = st_sub(l->fdt, 0, "devices", l->err, sizeof(l->err));
	int r = dev < 0 ? dev : platform_load(vm->dev.platform, l->fdt, dev, l->err, sizeof(l->err));
	if (r == 0)
		r = load_virtio(l, vm);
	if (r == 0)
		r = load_clocks(l, vm);
	return r < 0 ? vm_error(vm, r, "%s", l->err) : 0;
}

/* RAM from the memory file(s), then the one start sequence. */
static int build(struct rctx *c, struct microvm *vm, const char *dir, const void *fdt,
		 uint32_t flags)
{
	int mach = st_sub(fdt, 0, "machine", c->err, c->errlen);
	if (mach < 0)
		return mach;
	uint64_t size;
	int r = st_get_u64(fdt, mach, "memory-size", &size, c->err, c->errlen);
	if (r < 0)
		return r;
	if (size != vm->cfg.mem_mib * MIB)
		return fail(c, -EINVAL, "state: memory file of %llu bytes for %llu MiB of RAM",
			    (unsigned long long)size, (unsigned long long)vm->cfg.mem_mib);
	r = open_memory(c, dir, fdt, mach, size, flags, 0, &vm->kvm.mem);
	if (r < 0)
		return r;
	vm->snap.dirty_tracking = flags & MICROVM_RESTORE_TRACK_DIRTY;
	if (vm->snap.dirty_tracking && gm_track_dirty(&vm->kvm.mem) < 0)
		return fail(c, -ENOMEM, "out of memory");
	struct vm_start_ops ops = {
		.load_vm = load_vm,
		.load_vcpu = load_vcpu,
		.load_devices = load_devices,
		.paused = flags & MICROVM_RESTORE_PAUSED,
	};
	struct load_ctx l = { .fdt = fdt };
	r = vm_start_with(vm, &ops, &l);
	return r < 0 ? fail(c, r, "%s", microvm_last_error(vm)) : 0;
}

#define KNOWN_RESTORE_FLAGS                                                     \
	(MICROVM_RESTORE_PAUSED | MICROVM_RESTORE_VERIFY_MEMORY | MICROVM_RESTORE_PREFAULT | \
	 MICROVM_RESTORE_TRACK_DIRTY | MICROVM_RESTORE_KEEP_MAC | MICROVM_RESTORE_EMBEDDER_LOOP)

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
	int r = virtio_check_overrides(cfg, c.err, c.errlen);
	if (r < 0)
		return r;

	void *fdt = NULL;
	size_t len;
	r = read_state(&c, dir, &fdt, &len);
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
			free(vm->snap.base);
			vm->snap.base = abs;
			st_get_u32(fdt, 0, "checksum", &vm->snap.base_crc, c.err, c.errlen);
			reset_after_restore(vm, fdt, len);
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
	c.err[0] = '\0'; /* no stale text from optional lookups */
	*out = vm;
	return 0;
}

/* ------------------------------------------------------------ from memory */

int restore_from_blob(struct microvm **out, const void *fdt, struct guest_mem *mem,
		      const microvm_restore_config *cfg, const struct vm_seccomp *sec, char *err,
		      size_t errlen)
{
	struct rctx c = { err, errlen };
	struct microvm *vm = NULL;
	*out = NULL;
	int r = check_header(&c, fdt);
	if (r == 0 && (r = microvm_create(&vm)) < 0)
		fail(&c, r, "creating the VM: %s", strerror(-r));
	if (r == 0)
		r = configure(&c, vm, fdt, cfg);
	if (r == 0 && sec) { /* a setting: the programs are built at start */
		vm->sec.mode = sec->mode;
		vm->sec.n_extra = sec->n_extra;
		memcpy(vm->sec.extra, sec->extra, sizeof(vm->sec.extra));
	}
	if (r == 0 && mem->size != vm->cfg.mem_mib * MIB)
		r = fail(&c, -EINVAL, "state: %llu bytes of RAM for %llu MiB",
			 (unsigned long long)mem->size, (unsigned long long)vm->cfg.mem_mib);
	if (r < 0) {
		gm_release(mem);
		microvm_destroy(vm);
		return r;
	}
	pthread_mutex_lock(&vm->api_lock);
	vm->kvm.mem = *mem; /* adopted: the start sequence uses it as mapped */
	memset(mem, 0, sizeof(*mem));
	mem->fd = -1;
	struct vm_start_ops ops = {
		.load_vm = load_vm,
		.load_vcpu = load_vcpu,
		.load_devices = load_devices,
		.paused = cfg->flags & MICROVM_RESTORE_PAUSED,
	};
	struct load_ctx l = { .fdt = fdt };
	r = vm_start_with(vm, &ops, &l);
	if (r < 0)
		fail(&c, r, "%s", microvm_last_error(vm));
	pthread_mutex_unlock(&vm->api_lock);
	if (r < 0) {
		microvm_destroy(vm);
		return r;
	}
	*out = vm;
	return 0;
}
