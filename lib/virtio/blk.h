/*
 * virtio-blk (virtio 1.2 section 5.2): a raw disk image as a virtio block
 * device with one request queue, on the virtio-mmio transport. The public
 * entry points are microvm_add_disk() and microvm_disk_backend(); the rest
 * of this header is the request engine, usable without a transport (and
 * without KVM) by the unit tests.
 */
#ifndef MICROVM_VIRTIO_BLK_H
#define MICROVM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

struct dev_host;
struct virtio_device_ops;
struct virtq;

#define VIRTIO_ID_BLOCK 2

/* Feature bits (section 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types (section 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

/* Status byte values. */
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

/* Flags of a discard/write-zeroes segment. */
#define VIRTIO_BLK_WZ_F_UNMAP 1u

#define VIRTIO_BLK_SECTOR_SIZE 512u
#define VIRTIO_BLK_HDR_SIZE 16u     /* le32 type, le32 reserved, le64 sector */
#define VIRTIO_BLK_ID_BYTES 20u
#define VIRTIO_BLK_SEG_SIZE 16u     /* le64 sector, le32 num_sectors, le32 flags */

/* Device configuration layout (section 5.2.4): byte offsets. */
#define VIRTIO_BLK_CFG_CAPACITY 0          /* le64, 512-byte sectors */
#define VIRTIO_BLK_CFG_SIZE_MAX 8          /* le32 */
#define VIRTIO_BLK_CFG_SEG_MAX 12          /* le32 */
#define VIRTIO_BLK_CFG_GEOMETRY 16         /* le16 cylinders, u8 heads, u8 sectors */
#define VIRTIO_BLK_CFG_BLK_SIZE 20         /* le32 */
#define VIRTIO_BLK_CFG_TOPOLOGY 24         /* 8 bytes */
#define VIRTIO_BLK_CFG_WRITEBACK 32        /* u8 */
#define VIRTIO_BLK_CFG_NUM_QUEUES 34       /* le16 */
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS 36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG 40
#define VIRTIO_BLK_CFG_DISCARD_ALIGNMENT 44
#define VIRTIO_BLK_CFG_MAX_WZ_SECTORS 48
#define VIRTIO_BLK_CFG_MAX_WZ_SEG 52
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP 56     /* u8, then 3 unused bytes */
#define VIRTIO_BLK_CFG_SIZE 60

/* What this device offers and accepts. */
#define VIRTIO_BLK_QUEUE_DEPTH 128         /* requests in flight per disk */
#define VIRTIO_BLK_SEG_MAX 126             /* data segments per request */
#define VIRTIO_BLK_MAX_DISCARD_SEG 32
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22)  /* 2 GiB */
#define VIRTIO_BLK_MAX_WZ_SECTORS (1u << 16)       /* 32 MiB */
#define VIRTIO_BLK_DISCARD_ALIGNMENT 8             /* sectors (4 KiB) */

struct virtio_blk;

/*
 * Open the image @path (read-only with MICROVM_DISK_READ_ONLY) and set up a
 * device over it: capacity = size / 512, the I/O backend (io_uring unless
 * MICROVM_DISK_BACKEND_SYNC or io_uring is unavailable), @serial (NULL = none,
 * at most 20 bytes) copied. @host (the VM; NULL in tests) is borrowed for
 * the device's life. On failure returns a negative errno and writes a
 * message naming @path to @err.
 */
int blk_open(const struct dev_host *host, const char *path, uint32_t flags, const char *serial,
	     struct virtio_blk **out, char *err, size_t errlen);

/* Restore: the disk configuration its save wrote into @node (path,
 * read-only, backend, serial copied into @serial). 0 or -EINVAL + message. */
int blk_config_from_state(const void *fdt, int node, microvm_disk_config *dc,
			  char serial[VIRTIO_BLK_ID_BYTES + 1], char *err, size_t errlen);
/* The transport ops of a disk (one row of lib/vm_devices.c). */
extern const struct virtio_device_ops virtio_blk_ops;

/* Wait for the requests in flight (their results are dropped), close the
 * image, free. NULL is fine. */
void blk_free(struct virtio_blk *b);

const char *blk_backend_name(const struct virtio_blk *b); /* "io_uring" / "sync" */
uint64_t blk_capacity(const struct virtio_blk *b);        /* sectors */
uint64_t blk_features(const struct virtio_blk *b);        /* VIRTIO_BLK_F_* bits */
/* Readable when completions wait for blk_complete(); -1 for the sync backend. */
int blk_event_fd(const struct virtio_blk *b);
unsigned blk_in_flight(const struct virtio_blk *b);

/* Config space read (the transport's config_read). */
void blk_config_read(struct virtio_blk *b, uint32_t off, void *data, uint32_t len);

/*
 * Take every available request from @q (stopping early, with the rest left
 * in the ring, while VIRTIO_BLK_QUEUE_DEPTH requests are in flight), validate
 * it and start it. Requests finished meanwhile (all of them with the sync
 * backend; bad requests; GET_ID...) are pushed to the used ring with their
 * status. Returns how many requests were taken, or -EIO if the ring is
 * malformed (the device then needs a reset).
 * blk_pushed() counts the used-ring entries written since it was last
 * called: call virtio_notify_used() when it is non-zero.
 */
int blk_process_queue(struct virtio_blk *b, struct virtq *q);
unsigned blk_pushed(struct virtio_blk *b);

/*
 * Push the requests the backend finished (never blocks). With @refill, take
 * more requests from the queue if earlier processing stopped because too
 * many were in flight. Returns how many requests completed, or -EIO if the
 * used ring could not be written / the ring is malformed.
 */
int blk_complete(struct virtio_blk *b, bool refill);

/* Device reset: wait until nothing is in flight and drop the results (the
 * rings they belong to are gone). */
void blk_reset(struct virtio_blk *b);

#endif
