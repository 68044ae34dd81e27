/*
 * microvm_fork(): a copy-on-write child of a paused VM, built in memory.
 * The parent's state tree is built as a snapshot would write it, the child
 * maps the file under the parent's RAM privately (anonymous RAM is first
 * copied into a memfd and the parent's RAM becomes a private mapping of it) and
 * gets a copy of the pages the parent holds privately, then the restore
 * path builds and starts it from the tree.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "abi.h"
#include "arch/arch.h"
#include "snapshot/pages.h"
#include "snapshot/reset.h"
#include "snapshot/snapshot.h"
#include "virtio/devices.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_vmgenid.h"

struct fill_ctx {
	int fd;
	const uint8_t *host;
};

static int fill_run(void *opaque, uint64_t first, uint64_t n)
{
	struct fill_ctx *c = opaque;
	uint64_t off = first * GM_PAGE, len = n * GM_PAGE;
	while (len) {
		ssize_t w = pwrite(c->fd, c->host + off, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

/* Without the page map: every page that is not all zeros. */
static int nonzero_pages(const struct guest_mem *m, struct fill_ctx *c)
{
	int r = 0;
	for (uint64_t pg = 0; r == 0 && pg < GM_PAGES(m); pg++)
		if (!snapshot_page_is_zero(m->host + pg * GM_PAGE))
			r = fill_run(c, pg, 1);
	return r;
}

/* A memfd holding anonymous RAM @m's contents: the pages it populated,
 * found in the page map, and the ranges mapped from image copies; the rest
 * stay holes. A process that is not
 * dumpable cannot open its page map (it belongs to root then): every
 * non-zero page is copied instead. */
static int ram_to_memfd(const struct guest_mem *m, int *out)
{
	int fd = memfd_create("microvm-ram", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct fill_ctx c = { fd, m->host };
	int r = ftruncate(fd, (off_t)m->size) < 0 ? -errno : 0;
	int pm = r == 0 ? open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) : -1;
	if (r == 0)
		r = pm >= 0 ? private_pages(pm, m, fill_run, &c) : nonzero_pages(m, &c);
	for (uint32_t i = 0; r == 0 && pm >= 0 && i < m->n_mapped; i++)
		r = fill_run(&c, m->mapped[i].off / GM_PAGE, m->mapped[i].len / GM_PAGE);
	if (pm >= 0)
		close(pm);
	if (r < 0) {
		close(fd);
		return r;
	}
	*out = fd;
	return 0;
}

/* The parent's RAM as a private mapping of a file holding its contents.
 * Anonymous RAM is first copied into a memfd (the pages it populated, once
 * per parent: from then on the parent maps that file). */
static int freeze_ram(struct microvm *vm)
{
	struct guest_mem *m = &vm->kvm.mem;
	if (m->file_backed)
		return 0;
	int fd = -1;
	int r = ram_to_memfd(m, &fd);
	if (r == 0) {
		r = snapshot_remap_private(m, fd);
		if (r < 0)
			close(fd);
		else
			m->fd = fd;
	}
	return r < 0 ? vm_error(vm, r, "fork: remapping guest RAM: %s", strerror(-r)) : 0;
}

struct copy_ctx {
	const struct guest_mem *from;
	struct guest_mem *to;
};

static int copy_run(void *opaque, uint64_t first, uint64_t n)
{
	struct copy_ctx *c = opaque;
	memcpy(c->to->host + first * GM_PAGE, c->from->host + first * GM_PAGE, n * GM_PAGE);
	return 0;
}

/* Copy into @c the pages @p holds privately (anonymous copies made on
 * write); the others are the file's. */
static int copy_private_pages(const struct guest_mem *p, struct guest_mem *c)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct copy_ctx ctx = { p, c };
	int r = private_pages(fd, p, copy_run, &ctx);
	close(fd);
	return r;
}

/* The child's RAM: the parent's file, private, plus its private pages. */
static int child_ram(struct microvm *parent, struct guest_mem *c)
{
	const struct guest_mem *p = &parent->kvm.mem;
	int fd = fcntl(p->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return vm_error(parent, -errno, "fork: %s", strerror(errno));
	int r = arch_ram_map_file(c, fd, p->size); /* fd adopted */
	if (r < 0)
		return vm_error(parent, r, "fork: mapping the child's RAM: %s", strerror(-r));
	r = copy_private_pages(p, c);
	if (r < 0) {
		gm_release(c);
		return vm_error(parent, r, "fork: copying private pages: %s", strerror(-r));
	}
	return 0;
}

static microvm_restore_config restore_cfg(const microvm_fork_config *fc)
{
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.flags = (fc->flags & MICROVM_FORK_PAUSED ? MICROVM_RESTORE_PAUSED : 0) |
		   (fc->flags & MICROVM_FORK_KEEP_MAC ? MICROVM_RESTORE_KEEP_MAC : 0) |
		   (fc->flags & MICROVM_FORK_EMBEDDER_LOOP ? MICROVM_RESTORE_EMBEDDER_LOOP : 0);
	rc.console_in = fc->console_in;
	rc.console_out = fc->console_out;
	rc.n_disks = fc->n_disks;
	rc.disk_paths = fc->disk_paths;
	rc.vsock_cid = fc->vsock_cid;
	rc.vsock_uds_path = fc->vsock_uds_path;
	rc.log_fn = fc->log_fn;
	rc.log_opaque = fc->log_opaque;
	rc.log_level = fc->log_level;
	rc.kick_signal = fc->kick_signal;
	return rc;
}

/* The child takes the parent's reset target. Its RAM maps the parent's
 * file: the target's memory file, unless the parent took the snapshot and
 * was not reset since (its RAM is not yet mapped from it): then the child's
 * first reset maps it, as the parent's would. */
static void inherit_reset(struct microvm *parent, struct microvm *child)
{
	if (!parent->snap.reset_state)
		return;
	void *st = malloc(parent->snap.reset_len);
	char *dir = parent->snap.reset_dir ? strdup(parent->snap.reset_dir) : NULL;
	if (!st || (parent->snap.reset_dir && !dir)) {
		free(st);
		free(dir);
		return;
	}
	memcpy(st, parent->snap.reset_state, parent->snap.reset_len);
	child->snap.reset_state = st;
	child->snap.reset_len = parent->snap.reset_len;
	child->snap.reset_dir = dir;
	child->snap.reset_remap = parent->snap.reset_remap;
}

static int fork_locked(struct microvm *parent, struct microvm **child,
		       const microvm_fork_config *fc)
{
	microvm_restore_config rc = restore_cfg(fc);
	char err[256] = "";
	int r = virtio_check_overrides(&rc, err, sizeof(err));
	if (r < 0)
		return vm_error(parent, r, "fork: %s", err);
	void *fdt = NULL;
	size_t len = 0;
	struct guest_mem mem = { .fd = -1 };
	r = snapshot_state_blob(parent, &fdt, &len);
	if (r == 0)
		r = freeze_ram(parent);
	if (r == 0)
		r = child_ram(parent, &mem);
	if (r == 0 &&
	    (r = restore_from_blob(child, fdt, &mem, &rc, &parent->sec, err, sizeof(err))) < 0)
		vm_error(parent, r, "fork: %s", err);
	free(fdt);
	if (r < 0)
		return r;
	pthread_mutex_lock(&(*child)->api_lock);
	inherit_reset(parent, *child);
	if (vm_vmgenid_renew(*child, NULL) < 0)
		vm_warn(*child, "fork: %s", "new VM generation ID not signalled");
	pthread_mutex_unlock(&(*child)->api_lock);
	return 0;
}

/* A paused parent whose vCPUs are all parked, with a usable config. */
static int check_parent(struct microvm *vm, const microvm_fork_config *fc)
{
	const uint32_t known = MICROVM_FORK_PAUSED | MICROVM_FORK_KEEP_MAC | MICROVM_FORK_EMBEDDER_LOOP;
	if (fc->flags & ~known)
		return vm_error(vm, -EINVAL, "fork: unknown flags 0x%x", fc->flags & ~known);
	pthread_mutex_lock(&vm->run.lock);
	bool ok = vm->run.state == MICROVM_STATE_PAUSED && vm_wait_parked(vm);
	pthread_mutex_unlock(&vm->run.lock);
	if (!ok)
		return vm_error(vm, -EINVAL, "fork: the VM must be paused (microvm_pause)");
	if (vm->cfg.vsock_enabled && vm->cfg.vsock_uds_path && !fc->vsock_uds_path)
		return vm_error(vm, -EINVAL, "fork: the parent's vsock listens on %s: give the "
				"child its own vsock_uds_path", vm->cfg.vsock_uds_path);
	if (!vm->kvm.mem.host)
		return vm_error(vm, -EINVAL, "fork: the VM has no RAM");
	return 0;
}

MICROVM_API int microvm_fork(microvm *parent, microvm **child, const microvm_fork_config *cfg)
{
	if (!parent)
		return -EINVAL;
	if (!child)
		return vm_error(parent, -EINVAL, "fork: child is NULL");
	*child = NULL;
	microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
	char err[200];
	if (cfg && abi_copy_in(&fc, sizeof(fc), cfg, ABI_FORK_CONFIG_MIN,
			       "fork: microvm_fork_config", err, sizeof(err)) < 0)
		return vm_error(parent, -EINVAL, "%s", err);
	pthread_mutex_lock(&parent->api_lock);
	int r = check_parent(parent, &fc);
	if (r == 0) {
		/* No device work while the state is read (as for a snapshot). */
		evloop_stop(&parent->dev.evloop);
		for (uint32_t i = 0; i < parent->dev.nr_virtio; i++)
			virtio_mmio_quiesce(parent->dev.virtio[i]);
		r = fork_locked(parent, child, &fc);
		evloop_start(&parent->dev.evloop);
	}
	pthread_mutex_unlock(&parent->api_lock);
	if (r == 0) {
		vm_info(*child, "forked");
		vm_notify(*child);
	} else if (*child) {
		microvm_destroy(*child);
		*child = NULL;
	}
	return r;
}
