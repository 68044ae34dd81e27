/* microvm_reset() bookkeeping, called by the snapshot writer and restore. */
#ifndef MICROVM_SNAPSHOT_RESET_H
#define MICROVM_SNAPSHOT_RESET_H

#include <stdbool.h>
#include <stddef.h>

struct guest_mem;
struct microvm;

/*
 * Restore built @vm from the state tree @fdt (@len bytes) of the snapshot
 * in @dir: keep the state for microvm_reset() (a full snapshot only: its
 * memory file then backs all of RAM) and give the guest a new VM
 * generation ID. API lock held. Failures only log: the VM is fine.
 */
void reset_after_restore(struct microvm *vm, const void *fdt, size_t len);

/*
 * microvm_snapshot() installed a snapshot at @dir (absolute). A full one
 * becomes the target of microvm_reset(): guest RAM is remapped private
 * copy-on-write over its memory file (the contents are equal) and its state
 * is kept. A diff snapshot leaves the VM without a reset target. Paused VM,
 * devices quiesced, dirty tracking just restarted. Failures only log.
 */
void reset_after_snapshot(struct microvm *vm, const char *dir, bool diff);

/*
 * Replace the mapping of @m's RAM, in place (same host address, so KVM's
 * memslots and every pointer stay valid), by a private copy-on-write
 * mapping of @fd, whose contents must equal RAM's (@fd borrowed; the caller
 * makes it m->fd). Atomic: on failure RAM is untouched. 0 or -errno.
 */
int snapshot_remap_private(struct guest_mem *m, int fd);

#endif
