/* The process's boot-image cache: a sealed in-memory copy (memfd) of each
 * large kernel or initrd file recently loaded, so the next VM booting the
 * same file maps its pages copy-on-write into guest RAM instead of reading
 * the file again. One fd per cached file, none per VM; bounded in bytes
 * (least recently used copies go first). A file is the same file while its
 * device, inode, size, mtime and ctime are (a write changes the ctime). */
#ifndef MICROVM_IMAGE_CACHE_H
#define MICROVM_IMAGE_CACHE_H

#include <stdint.h>

struct image;
struct image_copy; /* one cached copy; opaque */

/*
 * The cached copy of @im (an open file) whose bytes sit at @shift (< 4096)
 * past the copy's start: file offset o is at copy offset o + @shift, so a
 * range can be mapped wherever its page offset is o + @shift's. Made now
 * (the whole file read once) if absent. NULL when the cache is off, the
 * file is larger than the cache or changed while it was copied, or on any
 * error: the caller then reads the file as usual. Release with
 * image_cache_put().
 */
struct image_copy *image_cache_get(const struct image *im, uint64_t shift);
/* The copy's fd (valid until image_cache_put). */
int image_copy_fd(const struct image_copy *c);
void image_cache_put(struct image_copy *c);

/* Limit the cache to @mib MiB (0: off, every copy dropped once unused). */
void image_cache_set_limit(uint32_t mib);
/* Copies held and their bytes. */
void image_cache_stats(uint32_t *copies, uint64_t *bytes);

#endif
