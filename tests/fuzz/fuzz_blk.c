/*
 * virtio-blk request parsing (lib/virtio/blk.c): the input becomes request
 * chains (tests/fuzz/fuzz.h format: header, data and status segments split
 * and flagged as the fuzzer likes) on a 64 KiB image with the synchronous
 * backend; the device processes them and completes every request.
 */
#include "fuzz.h"

#include <stdio.h>
#include <unistd.h>

#include <microvm.h>

#include "virtio/blk.h"

static struct guest_mem mem;
static struct fz_queue fq;
static struct virtio_blk *blk[2]; /* read-write, read-only */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void setup(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/shm/microvm-fuzz-blk-%d", (int)getpid());
	FILE *f = fopen(path, "w");
	fz_check(f != NULL && ftruncate(fileno(f), 64 * 1024) == 0);
	fclose(f);
	char err[256];
	fz_check(blk_open(NULL, path, MICROVM_DISK_BACKEND_SYNC, "fuzz-serial", &blk[0], err,
			  sizeof(err)) == 0);
	fz_check(blk_open(NULL, path, MICROVM_DISK_BACKEND_SYNC | MICROVM_DISK_READ_ONLY, NULL,
			  &blk[1], err, sizeof(err)) == 0);
	unlink(path); /* the open fds keep it */
	fz_ram(&mem, FZ_RAM);
	fz_queue_init(&fq, &mem, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!blk[0])
		setup();
	if (size < 1)
		return 0;
	struct virtio_blk *b = blk[data[0] & 1];
	data++, size--;
	fz_queue_reset(&fq);
	uint64_t heap = FZ_HEAP;
	size_t used;
	while ((used = fz_chain(&fq, &heap, data, size)) > 0)
		data += used, size -= used;
	if (blk_process_queue(b, &fq.q) >= 0)
		while (blk_complete(b, true) > 0)
			;
	(void)blk_pushed(b);
	uint8_t cfg[VIRTIO_BLK_CFG_SIZE];
	blk_config_read(b, 0, cfg, sizeof(cfg));
	return 0;
}
