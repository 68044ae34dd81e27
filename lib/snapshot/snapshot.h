/* Snapshot files shared by the writer (snapshot.c) and restore (restore.c). */
#ifndef MICROVM_SNAPSHOT_H
#define MICROVM_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

struct vm_seccomp;

struct guest_mem;

/* Deepest chain of diff snapshots restore follows. */
#define SNAPSHOT_MAX_DIFF_DEPTH 32

/*
 * The memory checksum: CRC-32C chained over the pages a memory file
 * carries, in address order, each preceded by its 8-byte little-endian page
 * number. A full snapshot carries its non-zero pages; a diff carries exactly
 * the pages in its bitmap (zero or not).
 */
uint32_t snapshot_page_crc(uint32_t crc, uint64_t page, const void *data);

/* Whether the 4 KiB page at @p (8-byte aligned) is all zeros. */
bool snapshot_page_is_zero(const uint8_t *p);

struct microvm;
struct guest_mem;

/* The state tree of a paused, quiesced VM as a snapshot would save it
 * (without memory checksum), malloc'd into *@fdt. 0 or -errno (message
 * recorded on @vm). (snapshot.c) */
int snapshot_state_blob(struct microvm *vm, void **fdt, size_t *len);

/* With dirty tracking on (for diff snapshots), restart it: RAM now equals
 * the base. 0 or -errno (message recorded on @vm). (snapshot.c) */
int snapshot_dirty_restart(struct microvm *vm);

/*
 * A new VM from the state tree @fdt whose RAM is already mapped in @mem
 * (adopted, released on failure too), with @cfg's per-clone overrides
 * (flags: MICROVM_RESTORE_PAUSED and _KEEP_MAC only), started; its threads
 * filtered as @sec says (a fork's parent's setting: mode and extra calls)
 * if not NULL, else as @cfg->seccomp. 0 with *@out, or -errno with a
 * message in @err. (restore.c)
 */
int restore_from_blob(struct microvm **out, const void *fdt, struct guest_mem *mem,
		      const microvm_restore_config *cfg, const struct vm_seccomp *sec, char *err,
		      size_t errlen);

#endif
