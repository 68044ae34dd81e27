/* Snapshot files shared by the writer (snapshot.c) and restore (restore.c). */
#ifndef MICROVM_SNAPSHOT_H
#define MICROVM_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
