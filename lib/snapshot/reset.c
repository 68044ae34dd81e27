/*
 * microvm_reset(): return a VM in place to the snapshot it was restored
 * from (or last took). The snapshot's state tree is kept in memory; guest
 * RAM is a private copy-on-write mapping of the snapshot's memory file, so
 * the pages written since (by the guest, KVM or a device) are the mapping's
 * private pages: found with PAGEMAP_SCAN, dropped with MADV_DONTNEED, they
 * read the file's contents again. Nothing is re-created: the same KVM VM,
 * vCPUs, memslots, devices and fds.
 */
#include "snapshot/reset.h"

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

#include "arch/arch.h"
#include "snapshot/pages.h"
#include "snapshot/snapshot.h"
#include "snapshot/state.h"
#include "vcpu.h"
#include "vm.h"
#include "vm_vmgenid.h"

/* ------------------------------------------------------------ bookkeeping */

static void forget(struct microvm *vm)
{
	free(vm->snap.reset_state);
	free(vm->snap.reset_dir);
	vm->snap.reset_state = NULL;
	vm->snap.reset_dir = NULL;
	vm->snap.reset_len = 0;
	vm->snap.reset_remap = false;
}

static int keep_state(struct microvm *vm, const void *fdt, size_t len)
{
	void *copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, fdt, len);
	forget(vm);
	vm->snap.reset_state = copy;
	vm->snap.reset_len = len;
	return 0;
}

void reset_after_restore(struct microvm *vm, const void *fdt, size_t len)
{
	int mach = fdt_subnode_offset(fdt, 0, "machine");
	bool diff = mach >= 0 && fdt_getprop(fdt, mach, "diff-base", NULL);
	/* A diff snapshot's pages were copied into RAM: the file under the
	 * mapping is its base, not it. */
	if (!diff && vm->kvm.mem.file_backed)
		keep_state(vm, fdt, len);
	if (vm_vmgenid_renew(vm, NULL) < 0)
		vm_warn(vm, "restore: %s", "new VM generation ID not signalled");
}

/* Read @dir/state.dtb (just written by this process) into memory. */
static int read_state_file(const char *dir, void **out, size_t *len)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/state.dtb", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	void *b = r == 0 && st.st_size > 0 ? malloc((size_t)st.st_size) : NULL;
	if (r == 0 && !b)
		r = -ENOMEM;
	if (r == 0 && pread(fd, b, (size_t)st.st_size, 0) != st.st_size)
		r = -EIO;
	close(fd);
	if (r < 0) {
		free(b);
		return r;
	}
	*out = b;
	*len = (size_t)st.st_size;
	return 0;
}

int snapshot_remap_private(struct guest_mem *m, int fd)
{
	void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	madvise(p, m->size, MADV_DONTDUMP);
	if (mremap(p, m->size, m->size, MREMAP_MAYMOVE | MREMAP_FIXED, m->host) == MAP_FAILED) {
		int e = -errno;
		munmap(p, m->size);
		return e;
	}
	m->file_backed = true;
	m->all_zero = false;
	m->n_mapped = 0; /* the image copies' ranges went with the old mapping */
	return 0;
}

/*
 * The first reset of a VM that took its snapshot: open the snapshot's
 * memory file (into *@fd) after checking the snapshot there is still the
 * one taken (its state file unchanged), before anything is touched.
 */
static int open_target_memory(struct microvm *vm, int *fd)
{
	const char *dir = vm->snap.reset_dir;
	void *fdt = NULL;
	size_t len = 0;
	char path[PATH_MAX];
	int r = dir ? read_state_file(dir, &fdt, &len) : -ENOENT;
	if (r == 0 && (len != vm->snap.reset_len || memcmp(fdt, vm->snap.reset_state, len)))
		r = -ESTALE;
	free(fdt);
	if (r == 0 && snprintf(path, sizeof(path), "%s/memory", dir) >= (int)sizeof(path))
		r = -ENAMETOOLONG;
	if (r == 0 && (*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		r = -errno;
	if (r < 0)
		return vm_error(vm, -EINVAL, "reset: the snapshot at %s was replaced or removed (%s): "
				"nothing to return to", dir ? dir : "?", strerror(-r));
	return 0;
}

/* The snapshot just installed at @dir (full, or diff) becomes the target;
 * RAM is mapped over its memory file at the first reset, so a VM that is
 * never reset keeps its RAM as it is. */
void reset_after_snapshot(struct microvm *vm, const char *dir, bool diff)
{
	forget(vm);
	if (diff)
		return;
	void *fdt = NULL;
	size_t len = 0;
	int r = read_state_file(dir, &fdt, &len);
	if (r < 0) {
		vm_warn(vm, "snapshot %s: microvm_reset() will not be available: %s", dir,
			strerror(-r));
		return;
	}
	vm->snap.reset_state = fdt;
	vm->snap.reset_len = len;
	vm->snap.reset_dir = strdup(dir); /* NULL: the first reset fails cleanly */
	vm->snap.reset_remap = true;
}

/* ----------------------------------------------------------------- memory */

/* Dirty runs at most this many pages apart are dropped with one call. */
#define RESET_MERGE_GAP 64

struct drop {
	struct guest_mem *m;
	uint64_t run, len; /* the run being merged */
};

/* Drop pages [first, first + n) of RAM: they read the file again. */
static int drop_pages(struct guest_mem *m, uint64_t first, uint64_t n)
{
	return madvise(m->host + first * GM_PAGE, n * GM_PAGE, MADV_DONTNEED) < 0 ? -errno : 0;
}

/* One run of private pages. Close runs are dropped together, gaps
 * included: a page between them is the file's, so dropping it only costs a
 * fault on its next use, and each madvise() call costs more than the zap. */
static int drop_run(void *opaque, uint64_t first, uint64_t n)
{
	struct drop *d = opaque;
	if (d->len && first - (d->run + d->len) < RESET_MERGE_GAP) {
		d->len = first + n - d->run;
		return 0;
	}
	int r = d->len ? drop_pages(d->m, d->run, d->len) : 0;
	d->run = first;
	d->len = n;
	return r;
}

/* Drop every page RAM holds privately (written since it was mapped from
 * the target's memory file, by the guest, KVM or a device): found in the
 * process's page tables, so nothing has to log writes for it. */
static int drop_private(struct microvm *vm)
{
	struct drop d = { .m = &vm->kvm.mem };
	int r = private_pages(vm->snap.pagemap_fd, &vm->kvm.mem, drop_run, &d);
	if (r == 0 && d.len)
		r = drop_pages(d.m, d.run, d.len);
	return r < 0 ? vm_error(vm, r, "reset: dropping written pages: %s", strerror(-r)) : 0;
}

/* Map RAM over the target's memory file @fd (adopted): RAM is then the
 * file's contents, with nothing private. */
static int remap_target(struct microvm *vm, int fd)
{
	struct guest_mem *m = &vm->kvm.mem;
	int r = snapshot_remap_private(m, fd);
	if (r < 0) {
		close(fd);
		return vm_error(vm, r, "reset: mapping the snapshot's memory: %s", strerror(-r));
	}
	if (m->fd >= 0)
		close(m->fd);
	m->fd = fd;
	vm->snap.reset_remap = false;
	return 0;
}

/* RAM as the target's memory file holds it; @fd >= 0 (adopted): the file,
 * to be mapped first. A diff snapshot's dirty log restarts: RAM now equals
 * its base. */
static int reset_memory(struct microvm *vm, int fd)
{
	/* Opened by the first reset and kept: the same fds from then on. */
	if (vm->snap.pagemap_fd < 0)
		vm->snap.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (vm->snap.pagemap_fd < 0) {
		int e = -errno;
		if (fd >= 0)
			close(fd);
		return vm_error(vm, e, "reset: /proc/self/pagemap: %s", strerror(-e));
	}
	int r = fd >= 0 ? remap_target(vm, fd) : drop_private(vm);
	return r == 0 && vm->snap.dirty_tracking ? snapshot_dirty_restart(vm) : r;
}

/* ------------------------------------------------------------------ state */

/* vCPUs, irqchip, PIT, clock, then the devices, from the kept state. The
 * vCPUs are parked, the event loop is stopped. */
static int load_state(struct microvm *vm)
{
	const void *fdt = vm->snap.reset_state;
	char err[256] = "";
	int n = st_sub(fdt, 0, "kvm", err, sizeof(err));
	int kn = n;
	int r = n < 0 ? n : arch_vm_load(vm->kvm.vm_fd, !vm->cfg.no_pit, fdt, n, err, sizeof(err));
	int fds[MICROVM_MAX_VCPUS], nodes[MICROVM_MAX_VCPUS];
	for (uint32_t i = 0; r == 0 && i < vm->cfg.nr_vcpus; i++) {
		char name[24];
		snprintf(name, sizeof(name), "vcpu@%u", i);
		n = nodes[i] = st_sub(fdt, 0, name, err, sizeof(err));
		fds[i] = vm->run.vcpus[i].fd;
		/* KVM answers the capability checks on the VM fd too:
		 * /dev/kvm is not kept open. */
		r = n < 0 ? n : arch_vcpu_load_state(vm->kvm.vm_fd, vm->run.vcpus[i].fd,
						     vm->run.vcpus[i].run, &vm->kvm.known, fdt,
						     n, err, sizeof(err));
	}
	/* The clocks together, as a restore sets them (arch_clock_load). */
	if (r == 0)
		r = arch_clock_load(vm->kvm.vm_fd, fds, nodes, vm->cfg.nr_vcpus, fdt, kn,
				    &vm->kvm.known, err, sizeof(err));
	n = r < 0 ? r : st_sub(fdt, 0, "devices", err, sizeof(err));
	r = n < 0 ? n : platform_load(vm->dev.platform, fdt, n, err, sizeof(err));
	for (uint32_t i = 0; r == 0 && i < vm->dev.nr_virtio; i++) {
		char name[24];
		snprintf(name, sizeof(name), "virtio@%u", i);
		n = st_sub(fdt, 0, name, err, sizeof(err));
		r = n < 0 ? n : virtio_mmio_load(vm->dev.virtio[i], fdt, n, err, sizeof(err));
	}
	return r < 0 ? vm_error(vm, r, "reset: %s", err) : 0;
}

/* Each virtio device as after a driver reset (in-flight I/O finished,
 * vsock streams closed on the host side), before its state is loaded. */
static void reset_devices(struct microvm *vm)
{
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++) {
		struct virtio_device *d = vm->dev.virtio[i];
		virtio_mmio_quiesce(d);
		pthread_mutex_lock(&d->lock);
		if (d->ops->reset)
			d->ops->reset(d->opaque);
		pthread_mutex_unlock(&d->lock);
	}
}

/* ---------------------------------------------------------------- the call */

/* Park every vCPU (the VM is running or paused). False if it is stopping. */
static bool park_all(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	bool ok = vm->run.state == MICROVM_STATE_RUNNING || vm->run.state == MICROVM_STATE_PAUSED;
	if (ok) {
		atomic_fetch_or(&vm->run.requests, REQ_PAUSE);
		vcpu_kick_all(vm);
		ok = vm_wait_parked(vm);
		if (ok) {
			vm->run.state = MICROVM_STATE_PAUSED;
		} else {
			/* It is stopping: let it finish (as microvm_pause). */
			atomic_fetch_and(&vm->run.requests, ~REQ_PAUSE);
			pthread_cond_broadcast(&vm->run.cond);
			while (vm->run.vcpus_exited < vm->run.vcpus_running)
				vm_wait_or_rekick(vm);
		}
	}
	pthread_mutex_unlock(&vm->run.lock);
	return ok;
}

static void let_run(struct microvm *vm)
{
	pthread_mutex_lock(&vm->run.lock);
	atomic_fetch_and(&vm->run.requests, ~REQ_PAUSE);
	vm->run.state = MICROVM_STATE_RUNNING;
	pthread_cond_broadcast(&vm->run.cond);
	pthread_mutex_unlock(&vm->run.lock);
}

static int reset_locked(struct microvm *vm, uint32_t flags)
{
	int state = microvm_state(vm);
	if (state != MICROVM_STATE_RUNNING && state != MICROVM_STATE_PAUSED)
		return vm_error(vm, -EINVAL, "reset: the VM is not running or paused");
	if (!vm->snap.reset_state)
		return vm_error(vm, -EINVAL, "reset: no snapshot to return to (restore the VM from "
				"a full snapshot, or take one with microvm_snapshot without "
				"MICROVM_SNAPSHOT_DIFF)");
	bool was_running = state == MICROVM_STATE_RUNNING;
	int fd = -1;
	if (vm->snap.reset_remap && open_target_memory(vm, &fd) < 0)
		return -EINVAL;
	if (!park_all(vm)) {
		if (fd >= 0)
			close(fd);
		return vm_error(vm, -EINVAL, "reset: the VM stopped");
	}
	evloop_stop(&vm->dev.evloop);
	reset_devices(vm);
	int r = reset_memory(vm, fd);
	if (r == 0)
		r = load_state(vm);
	if (r == 0 && vm_vmgenid_renew(vm, NULL) < 0)
		vm_warn(vm, "reset: %s", "new VM generation ID not signalled");
	evloop_start(&vm->dev.evloop);
	if (r < 0) {
		/* Half loaded: the guest must not run on. */
		vm_request_exit(vm, MICROVM_EXIT_INTERNAL_ERROR, r, 0, "reset failed");
		return r;
	}
	if (!(flags & MICROVM_RESET_PAUSED))
		let_run(vm);
	if (was_running || !(flags & MICROVM_RESET_PAUSED))
		vm_notify(vm);
	return 0;
}

MICROVM_API int microvm_reset(microvm *vm, uint32_t flags)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = flags & ~MICROVM_RESET_PAUSED
			? vm_error(vm, -EINVAL, "reset: unknown flags 0x%x",
				   flags & ~MICROVM_RESET_PAUSED)
			: reset_locked(vm, flags);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}
