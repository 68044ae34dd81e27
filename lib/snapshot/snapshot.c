/*
 * microvm_snapshot(): quiesce a paused VM, save its state tree and RAM into
 * a temporary directory, and rename that into place.
 */
#include "snapshot/snapshot.h"
#include "snapshot/reset.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libfdt.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/arch.h"
#include "errbuf.h"
#include "snapshot/pages.h"
#include "snapshot/state.h"
#include "vm.h"
#include "vm_config.h"

uint32_t snapshot_page_crc(uint32_t crc, uint64_t page, const void *data)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(page >> (8 * i));
	crc = crc32c(crc, le, sizeof(le));
	return crc32c(crc, data, GM_PAGE);
}

bool snapshot_page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t acc = 0;
	for (size_t i = 0; i < GM_PAGE / 8; i++)
		acc |= w[i];
	return acc == 0;
}

/* ------------------------------------------------------------ dirty pages */

static int kvm_dirty_log(struct microvm *vm, uint32_t slot, uint64_t first_page,
			 uint64_t npages, uint64_t *out)
{
	size_t words = (size_t)((npages + 63) / 64);
	uint64_t *bm = calloc(words ? words : 1, sizeof(uint64_t));
	if (!bm)
		return -ENOMEM;
	struct kvm_dirty_log log = { .slot = slot, .dirty_bitmap = bm };
	int r = ioctl(vm->kvm.vm_fd, KVM_GET_DIRTY_LOG, &log) < 0 ? -errno : 0;
	for (uint64_t i = 0; r == 0 && out && i < npages; i++)
		if (bm[i / 64] & (1ULL << (i % 64))) {
			uint64_t pg = first_page + i;
			out[pg / 64] |= 1ULL << (pg % 64);
		}
	free(bm);
	return r;
}

/* Pages written since tracking (re)started, KVM's log and the VMM's
 * bitmap together, into @out (NULL: just reset both). */
static int collect_dirty(struct microvm *vm, uint64_t *out)
{
	uint64_t low_pages = vm->kvm.mem.low_size / GM_PAGE;
	int r = kvm_dirty_log(vm, 0, 0, low_pages, out);
	if (r == 0 && vm->kvm.mem.size > vm->kvm.mem.low_size)
		r = kvm_dirty_log(vm, 1, low_pages, GM_PAGES(&vm->kvm.mem) - low_pages, out);
	if (r < 0)
		return vm_error(vm, r, "dirty log: KVM_GET_DIRTY_LOG: %s", strerror(-r));
	size_t words = (size_t)((GM_PAGES(&vm->kvm.mem) + 63) / 64);
	for (size_t i = 0; out && i < words; i++)
		out[i] |= __atomic_exchange_n(&vm->kvm.mem.dirty[i], 0, __ATOMIC_RELAXED);
	if (!out)
		memset(vm->kvm.mem.dirty, 0, words * sizeof(uint64_t));
	return 0;
}

int snapshot_dirty_restart(struct microvm *vm)
{
	return vm->snap.dirty_tracking ? collect_dirty(vm, NULL) : 0;
}

/* After a snapshot: track from now on (enabling it the first time). */
static int restart_tracking(struct microvm *vm)
{
	if (vm->snap.dirty_tracking)
		return collect_dirty(vm, NULL);
	int r = gm_track_dirty(&vm->kvm.mem);
	if (r < 0)
		return vm_error(vm, r, "snapshot: out of memory for dirty tracking");
	vm->snap.dirty_tracking = true;
	r = vm_memslots_set(vm);
	if (r < 0)
		vm->snap.dirty_tracking = false;
	return r;
}

/* ----------------------------------------------------------------- memory */

static int write_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

#define RUN_MAX (1u << 20) /* largest single write */

/* Runs of pages written to the memory file, merged while contiguous. */
struct mem_writer {
	int fd;
	const uint8_t *host;
	uint64_t start, len; /* the run being merged, in pages */
	uint64_t written;    /* bytes */
};

static int mw_flush(struct mem_writer *w)
{
	if (!w->len)
		return 0;
	int r = write_all(w->fd, w->host + w->start * GM_PAGE, w->len * GM_PAGE,
			  w->start * GM_PAGE);
	w->written += w->len * GM_PAGE;
	w->len = 0;
	return r;
}

static int mw_page(struct mem_writer *w, uint64_t pg)
{
	if (w->len && w->start + w->len == pg && w->len * GM_PAGE < RUN_MAX) {
		w->len++;
		return 0;
	}
	int r = mw_flush(w);
	w->start = pg;
	w->len = 1;
	return r;
}

static int mark_run(void *opaque, uint64_t first, uint64_t n)
{
	uint64_t *bits = opaque;
	for (uint64_t pg = first; pg < first + n; pg++)
		bits[pg / 64] |= 1ULL << (pg % 64);
	return 0;
}

/* Anonymous RAM: the pages it populated and the ranges mapped from image
 * copies (the others read as zeros), as a
 * bitmap in *@out. NULL (scan all) for RAM mapped from a file, and when
 * the page map cannot be opened (a process that is not dumpable: it
 * belongs to root then). */
static int populated_pages(const struct guest_mem *m, uint64_t **out)
{
	*out = NULL;
	if (m->file_backed)
		return 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uint64_t *bits = calloc((size_t)((GM_PAGES(m) + 63) / 64) + 1, sizeof(uint64_t));
	int r = bits ? private_pages(fd, m, mark_run, bits) : -ENOMEM;
	for (uint32_t i = 0; r == 0 && i < m->n_mapped; i++)
		mark_run(bits, m->mapped[i].off / GM_PAGE, m->mapped[i].len / GM_PAGE);
	close(fd);
	if (r < 0)
		free(bits);
	else
		*out = bits;
	return r;
}

/*
 * Write RAM to @fd (already truncated to the RAM size, so skipped pages are
 * holes). @diff NULL: every non-zero page; else exactly the pages in @diff.
 * Adds the memory checksum and the bytes written.
 */
static int write_memory(struct microvm *vm, int fd, const uint64_t *diff, uint32_t *crc,
			uint64_t *written)
{
	const struct guest_mem *m = &vm->kvm.mem;
	uint64_t *populated = NULL;
	int r = diff ? 0 : populated_pages(m, &populated);
	const uint64_t *only = diff ? diff : populated;
	struct mem_writer w = { .fd = fd, .host = m->host };
	for (uint64_t pg = 0; r == 0 && pg < GM_PAGES(m); pg++) {
		if (only && !only[pg / 64]) {
			pg |= 63; /* none in this word */
			continue;
		}
		if (only && !(only[pg / 64] & (1ULL << (pg % 64))))
			continue;
		const uint8_t *p = m->host + pg * GM_PAGE;
		bool zero = snapshot_page_is_zero(p);
		if (diff || !zero)
			*crc = snapshot_page_crc(*crc, pg, p);
		if (!zero) /* a hole reads back as zeros */
			r = mw_page(&w, pg);
	}
	if (r == 0)
		r = mw_flush(&w);
	free(populated);
	*written += w.written;
	return r;
}

/* ------------------------------------------------------------------ state */

static int build_state(struct microvm *vm, struct st_writer *w, int kvm_fd, const uint64_t *diff,
		       uint32_t mem_crc, char *err, size_t errlen)
{
	st_u32(w, 0, "format-version", SNAPSHOT_FORMAT_VERSION);
	st_u32(w, 0, "library-major", MICROVM_VERSION_MAJOR);
	st_str(w, 0, "library-version", MICROVM_VERSION_STRING);
	st_str(w, 0, "arch", arch_name);

	int mach = st_node(w, 0, "machine");
	vm_config_save(vm, w, mach);
	st_u64(w, mach, "memory-size", vm->kvm.mem.size);
	st_u32(w, mach, "memory-checksum", mem_crc);
	if (diff) {
		st_str(w, mach, "diff-base", vm->snap.base);
		st_u32(w, mach, "diff-base-checksum", vm->snap.base_crc);
		st_blob(w, mach, "diff-pages", diff,
			(size_t)((GM_PAGES(&vm->kvm.mem) + 63) / 64) * sizeof(uint64_t));
	}

	int kn = st_node(w, 0, "kvm");
	int r = arch_vm_save(vm->kvm.vm_fd, !vm->cfg.no_pit, w, kn, err, errlen);
	int fds[MICROVM_MAX_VCPUS];
	for (uint32_t i = 0; r == 0 && i < vm->cfg.nr_vcpus; i++) {
		char name[24];
		snprintf(name, sizeof(name), "vcpu@%u", i);
		fds[i] = vm->run.vcpus[i].fd;
		/* A reset may have left registers for the next KVM_RUN. */
		r = arch_vcpu_sync_flush(fds[i], vm->run.vcpus[i].run);
		if (r < 0)
			return errbuf_fail(err, errlen, r, "vCPU %u: loading registers: %s", i,
					   strerror(-r));
		r = arch_vcpu_save(kvm_fd, fds[i], w, st_node(w, 0, name), err, errlen);
	}
	/* Last, and in one go: the clocks keep running while the VM is paused.
	 * (Adding nodes moved the "kvm" node: look it up again.) */
	if (r == 0 && !w->err)
		r = arch_clock_save(vm->kvm.vm_fd, fds, vm->cfg.nr_vcpus, w,
				    fdt_subnode_offset(w->fdt, 0, "kvm"), err, errlen);
	if (r < 0)
		return r;
	platform_save(vm->dev.platform, w, st_node(w, 0, "devices"));
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++) {
		char name[24];
		snprintf(name, sizeof(name), "virtio@%u", i);
		virtio_mmio_save(vm->dev.virtio[i], w, st_node(w, 0, name));
	}
	return w->err ? errbuf_fail(err, errlen, w->err, "%s", w->what) : 0;
}

/* ------------------------------------------------------------- directory */

/*
 * Remove the snapshot directory @dir and the files in it (a snapshot has no
 * subdirectories). After a swap, @dir names the replaced snapshot, which
 * someone else may own and could swap for a symlink meanwhile: the
 * directory is opened without following links and its entries are removed
 * relative to that fd, so only entries of that directory itself can go.
 */
static void remove_tree(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(fd, e->d_name, 0);
	closedir(d);
	rmdir(dir); /* fails on anything but an empty directory */
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* Put the finished @tmp at @dir, replacing a previous snapshot there. */
static int install(struct microvm *vm, const char *tmp, const char *dir, const char *parent)
{
	struct stat st;
	if (lstat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return vm_error(vm, -EEXIST, "snapshot: %s exists and is not a directory", dir);
		char old_state[PATH_MAX + 32];
		snprintf(old_state, sizeof(old_state), "%s/" SNAPSHOT_STATE_FILE, dir);
		DIR *d = opendir(dir);
		bool empty = true;
		if (d) {
			struct dirent *e;
			while ((e = readdir(d)))
				if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
					empty = false;
			closedir(d);
		}
		if (!empty && access(old_state, F_OK) != 0)
			return vm_error(vm, -EEXIST, "snapshot: %s exists and is not a snapshot: "
					"not replacing it", dir);
		/* Swap atomically; the old snapshot ends up at @tmp. */
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) < 0)
			return vm_error(vm, -errno, "snapshot: replacing %s: %s", dir,
					strerror(errno));
		remove_tree(tmp);
	} else if (rename(tmp, dir) < 0) {
		return vm_error(vm, -errno, "snapshot: renaming into %s: %s", dir, strerror(errno));
	}
	fsync_path(parent);
	return 0;
}

/* A paused VM whose vCPUs are all parked. False if it is stopping. */
static bool all_parked(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	bool ok = vm->run.state == MICROVM_STATE_PAUSED && vm_wait_parked(vm);
	pthread_mutex_unlock(&vm->run.lock);
	return ok;
}

/* Exactly 0700, whatever the umask (mkdtemp's mode is 0700 minus it). */
static int make_private_dir(struct microvm *vm, const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int r = fd < 0 || fchmod(fd, 0700) < 0 ? -errno : 0;
	if (fd >= 0)
		close(fd);
	if (r < 0) {
		rmdir(dir);
		return vm_error(vm, r, "snapshot: %s: %s", dir, strerror(-r));
	}
	return 0;
}

/* Where the snapshot goes: @target (absolute), built first in a new
 * temporary directory @tmp beside it, in @parent (malloc'd). */
struct snap_paths {
	char *parent;
	char tmp[PATH_MAX];
	char target[PATH_MAX];
};

static int make_paths(struct microvm *vm, const char *dir, struct snap_paths *p)
{
	char *dcopy = strdup(dir);
	if (!dcopy)
		return vm_error(vm, -ENOMEM, "snapshot: out of memory");
	char *pdir = dirname(dcopy);
	p->parent = realpath(pdir, NULL);
	int r = p->parent ? 0 : vm_error(vm, -errno, "snapshot: %s: %s", pdir, strerror(errno));
	free(dcopy);
	if (r < 0)
		return r;
	dcopy = strdup(dir);
	char *leaf = dcopy ? basename(dcopy) : NULL;
	if (!leaf || !*leaf || !strcmp(leaf, ".") || !strcmp(leaf, "..") || !strcmp(leaf, "/") ||
	    snprintf(p->tmp, sizeof(p->tmp), "%s/.%s.tmp-XXXXXX", p->parent, leaf) >=
		    (int)sizeof(p->tmp) ||
	    snprintf(p->target, sizeof(p->target), "%s/%s", p->parent, leaf) >=
		    (int)sizeof(p->target))
		r = vm_error(vm, -EINVAL, "snapshot: %s is not a usable directory name", dir);
	free(dcopy);
	if (r == 0 && !mkdtemp(p->tmp))
		r = vm_error(vm, -errno, "snapshot: creating a directory in %s: %s", p->parent,
			     strerror(errno));
	if (r == 0)
		r = make_private_dir(vm, p->tmp);
	if (r < 0)
		p->tmp[0] = '\0';
	return r;
}

/* Write @len bytes to the new file @name in @dir and fsync it. */
static int write_new_file(struct microvm *vm, const char *dir, const char *name,
			  const void *data, size_t len)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) < 0) { /* exactly 0600, whatever the umask */
		int e = vm_error(vm, -errno, "snapshot: %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return e;
	}
	int r = write_all(fd, data, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r < 0 ? vm_error(vm, r, "snapshot: writing %s: %s", path, strerror(-r)) : 0;
}

/* The memory file: RAM (or the pages in @diff), sparse. */
static int save_memory(struct microvm *vm, const char *dir, const uint64_t *diff, uint32_t *crc,
		       uint64_t *written)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/" SNAPSHOT_MEMORY_FILE, dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)vm->kvm.mem.size) < 0) {
		int e = vm_error(vm, -errno, "snapshot: %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return e;
	}
	int r = write_memory(vm, fd, diff, crc, written);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r < 0 ? vm_error(vm, r, "snapshot: writing %s: %s", path, strerror(-r)) : 0;
}

/* The state file; its checksum becomes the VM's diff base checksum. */
static int save_state(struct microvm *vm, const char *dir, const uint64_t *diff,
		      uint32_t mem_crc, uint32_t *state_crc)
{
	char err[256] = "";
	struct st_writer w = { 0 };
	int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		return vm_error(vm, -errno, "snapshot: /dev/kvm: %s", strerror(errno));
	int r = st_init(&w);
	if (r == 0)
		r = build_state(vm, &w, kvm_fd, diff, mem_crc, err, sizeof(err));
	close(kvm_fd);
	long len = r < 0 ? r : st_finish(&w);
	if (len < 0)
		r = vm_error(vm, (int)len, "snapshot: %s", err[0] ? err : w.err ? w.what :
			     strerror((int)-len));
	else
		r = write_new_file(vm, dir, SNAPSHOT_STATE_FILE, w.fdt, (size_t)len);
	if (r == 0)
		*state_crc = fdt32_to_cpu(*(const fdt32_t *)fdt_getprop(w.fdt, 0, "checksum", NULL));
	st_free(&w);
	return r;
}

/* Installed: it is the base of the next diff snapshot; track from now on. */
static int became_base(struct microvm *vm, const char *target, uint32_t state_crc)
{
	char *base = strdup(target);
	if (!base)
		return vm_error(vm, -ENOMEM, "snapshot: out of memory");
	free(vm->snap.base);
	vm->snap.base = base;
	vm->snap.base_crc = state_crc;
	return restart_tracking(vm);
}

static int snapshot_locked(struct microvm *vm, const char *dir, uint32_t flags)
{
	bool diff = flags & MICROVM_SNAPSHOT_DIFF;
	if (diff && (!vm->snap.base || !vm->snap.dirty_tracking))
		return vm_error(vm, -ENOENT, "snapshot: a diff snapshot needs a base: take a full "
				"snapshot first (or restore with MICROVM_RESTORE_TRACK_DIRTY)");
	struct snap_paths p = { 0 };
	uint64_t *pages = NULL, written = 0;
	uint32_t mem_crc = 0, state_crc = 0;
	int r = make_paths(vm, dir, &p);
	if (r == 0 && diff) {
		pages = calloc((size_t)((GM_PAGES(&vm->kvm.mem) + 63) / 64) + 1, sizeof(uint64_t));
		r = pages ? collect_dirty(vm, pages) : vm_error(vm, -ENOMEM, "snapshot: out of memory");
	}
	if (r == 0)
		r = save_memory(vm, p.tmp, pages, &mem_crc, &written);
	if (r == 0)
		r = save_state(vm, p.tmp, pages, mem_crc, &state_crc);
	if (r == 0) {
		fsync_path(p.tmp);
		r = install(vm, p.tmp, p.target, p.parent);
	}
	if (r == 0) {
		p.tmp[0] = '\0'; /* installed */
		r = became_base(vm, p.target, state_crc);
		if (r == 0)
			reset_after_snapshot(vm, p.target, diff);
		vm_info(vm, "snapshot %s: %llu KiB of RAM written%s", p.target,
			(unsigned long long)(written / 1024), diff ? " (diff)" : "");
	}
	if (p.tmp[0])
		remove_tree(p.tmp);
	free(pages);
	free(p.parent);
	return r;
}

MICROVM_API int microvm_snapshot(microvm *vm, const char *dir, uint32_t flags)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = 0;
	if (!dir || !*dir)
		r = vm_error(vm, -EINVAL, "snapshot: no directory given");
	else if (flags & ~MICROVM_SNAPSHOT_DIFF)
		r = vm_error(vm, -EINVAL, "snapshot: unknown flags 0x%x", flags & ~MICROVM_SNAPSHOT_DIFF);
	else if (microvm_state(vm) != MICROVM_STATE_PAUSED || !all_parked(vm))
		r = vm_error(vm, -EINVAL, "snapshot: the VM must be paused (microvm_pause)");
	if (r == 0) {
		/* No device work while the state is read: the event loop stops,
		 * devices finish their in-flight I/O. */
		evloop_stop(&vm->dev.evloop);
		for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
			virtio_mmio_quiesce(vm->dev.virtio[i]);
		r = snapshot_locked(vm, dir, flags);
		evloop_start(&vm->dev.evloop);
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* ------------------------------------------------------ in-memory state */

int snapshot_state_blob(struct microvm *vm, void **fdt, size_t *len)
{
	char err[256] = "";
	struct st_writer w = { 0 };
	int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		return vm_error(vm, -errno, "fork: /dev/kvm: %s", strerror(errno));
	int r = st_init(&w);
	if (r == 0)
		r = build_state(vm, &w, kvm_fd, NULL, 0, err, sizeof(err));
	close(kvm_fd);
	long n = r < 0 ? r : st_finish(&w);
	if (n < 0) {
		r = vm_error(vm, (int)n, "fork: %s", err[0] ? err : w.err ? w.what :
			     strerror((int)-n));
	} else if (!(*fdt = malloc((size_t)n))) {
		r = vm_error(vm, -ENOMEM, "fork: out of memory");
	} else {
		memcpy(*fdt, w.fdt, (size_t)n);
		*len = (size_t)n;
		r = 0;
	}
	st_free(&w);
	return r;
}
