/*
 * A minimal poll-mode virtio-mmio block driver (virtio 1.2 sections 2.7,
 * 4.2, 5.2) for the first virtio device at 0xd0000000:
 *   - negotiates VIRTIO_F_VERSION_1 only, one queue of 8 entries;
 *   - prints the 32 bytes at the start of sector 0 ("vblk: sector0: ...");
 *   - writes a pattern to sector 1 and reads it back, unless "ro=1", in which
 *     case the write must fail with VIRTIO_BLK_S_IOERR;
 *   - with "evil=1" hands the device a descriptor pointing outside guest RAM
 *     and checks the device reports DEVICE_NEEDS_RESET (or fails the request)
 *     instead of the host crashing;
 *   - with "loop=1" reads sectors 0-7 in turn forever instead, printing
 *     "vblk: reads N" every 64 (a request is nearly always in flight: for
 *     microvm_reset tests).
 * Prints "vblk: ok" (or what failed), then resets the VM.
 */
#include "tiny.h"

#define DEV 0xd0000000ULL
#define R(off) (DEV + (off))
#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags, idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };
struct req_hdr { uint32_t type, reserved; uint64_t sector; };

static struct desc descs[QSIZE] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct req_hdr hdr;
static uint8_t data[512] __attribute__((aligned(512)));
static volatile uint8_t status;

#define F_NEXT 1
#define F_WRITE 2

static void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

static void fail(const char *what)
{
	tiny_puts("vblk: FAILED: ");
	tiny_puts(what);
	tiny_puts("\n");
	tiny_reset();
}

/* Submit header + data + status as one chain; wait for the device. */
static int request(uint32_t type, uint64_t sector, uint64_t data_addr, uint16_t data_flags)
{
	hdr.type = type;
	hdr.reserved = 0;
	hdr.sector = sector;
	status = 0xff;
	descs[2] = (struct desc){ (uint64_t)(uintptr_t)&status, 1, F_WRITE, 0 };
	if (data_addr) {
		descs[0] = (struct desc){ (uint64_t)(uintptr_t)&hdr, sizeof(hdr), F_NEXT, 1 };
		descs[1] = (struct desc){ data_addr, 512, (uint16_t)(data_flags | F_NEXT), 2 };
	} else {
		descs[0] = (struct desc){ (uint64_t)(uintptr_t)&hdr, sizeof(hdr), F_NEXT, 2 };
	}
	uint16_t old_used = *(volatile uint16_t *)&used.idx;
	avail.ring[avail.idx % QSIZE] = 0;
	barrier();
	*(volatile uint16_t *)&avail.idx = (uint16_t)(avail.idx + 1);
	barrier();
	mmio_write32(R(0x050), 0); /* QueueNotify */
	for (uint64_t spins = 0; *(volatile uint16_t *)&used.idx == old_used; spins++) {
		if (mmio_read32(R(0x070)) & 64)
			return -2; /* DEVICE_NEEDS_RESET */
		if (spins > 50000000ULL)
			return -3;
		cpu_relax();
	}
	barrier();
	return status;
}

static volatile uint64_t reads;

static void __attribute__((noreturn)) read_forever(void)
{
	for (;;) {
		if (request(0 /* IN */, reads % 8, (uint64_t)(uintptr_t)data, F_WRITE) != 0)
			fail("reading in a loop");
		reads++;
		if (reads % 64 == 0) {
			tiny_puts("vblk: reads ");
			tiny_putdec(reads);
			tiny_puts("\n");
		}
	}
}

void main(void *boot_params)
{
	int ro = (int)tiny_cmdline_num(boot_params, "ro", 0);
	int evil = (int)tiny_cmdline_num(boot_params, "evil", 0);
	if (mmio_read32(R(0x000)) != 0x74726976 || mmio_read32(R(0x004)) != 2)
		fail("no virtio-mmio v2 device at 0xd0000000");
	if (mmio_read32(R(0x008)) != 2)
		fail("device is not a block device");
	mmio_write32(R(0x070), 0);         /* reset */
	mmio_write32(R(0x070), 1);         /* ACKNOWLEDGE */
	mmio_write32(R(0x070), 1 | 2);     /* DRIVER */
	mmio_write32(R(0x014), 1);
	if (!(mmio_read32(R(0x010)) & 1))
		fail("VIRTIO_F_VERSION_1 not offered");
	mmio_write32(R(0x024), 0);
	mmio_write32(R(0x020), 0);
	mmio_write32(R(0x024), 1);
	mmio_write32(R(0x020), 1);         /* VERSION_1 */
	mmio_write32(R(0x070), 1 | 2 | 8); /* FEATURES_OK */
	if (!(mmio_read32(R(0x070)) & 8))
		fail("FEATURES_OK refused");
	mmio_write32(R(0x030), 0);         /* queue 0 */
	if (mmio_read32(R(0x034)) < QSIZE)
		fail("queue too small");
	mmio_write32(R(0x038), QSIZE);
	mmio_write32(R(0x080), (uint32_t)(uintptr_t)descs);
	mmio_write32(R(0x084), 0);
	mmio_write32(R(0x090), (uint32_t)(uintptr_t)&avail);
	mmio_write32(R(0x094), 0);
	mmio_write32(R(0x0a0), (uint32_t)(uintptr_t)&used);
	mmio_write32(R(0x0a4), 0);
	mmio_write32(R(0x044), 1);         /* QueueReady */
	mmio_write32(R(0x070), 1 | 2 | 8 | 4); /* DRIVER_OK */

	if (tiny_cmdline_num(boot_params, "loop", 0))
		read_forever();

	if (evil) {
		/* Data buffer far outside guest RAM. */
		int r = request(0 /* IN */, 0, 0x7fff00000000ULL, F_WRITE);
		if (r == -2)
			tiny_puts("vblk: device needs reset\n");
		else if (r == 1)
			tiny_puts("vblk: request failed with IOERR\n");
		else
			fail("bad descriptor was accepted");
		tiny_puts("vblk: still running\n");
		tiny_reset();
	}

	if (request(0 /* IN */, 0, (uint64_t)(uintptr_t)data, F_WRITE) != 0)
		fail("reading sector 0");
	char sig[33];
	for (int i = 0; i < 32; i++)
		sig[i] = (data[i] >= 32 && data[i] < 127) ? (char)data[i] : '.';
	sig[32] = 0;
	tiny_puts("vblk: sector0: ");
	tiny_puts(sig);
	tiny_puts("\n");

	for (int i = 0; i < 512; i++)
		data[i] = (uint8_t)('a' + i % 26);
	int w = request(1 /* OUT */, 1, (uint64_t)(uintptr_t)data, 0);
	if (ro) {
		if (w != 1)
			fail("write to a read-only disk did not fail with IOERR");
		tiny_puts("vblk: write rejected\n");
	} else {
		if (w != 0)
			fail("writing sector 1");
		memset(data, 0, sizeof(data));
		if (request(0 /* IN */, 1, (uint64_t)(uintptr_t)data, F_WRITE) != 0)
			fail("reading sector 1 back");
		for (int i = 0; i < 512; i++)
			if (data[i] != (uint8_t)('a' + i % 26))
				fail("sector 1 read back differs");
		if (request(4 /* FLUSH */, 0, 0, 0) != 0)
			fail("flush");
	}
	tiny_puts("vblk: ok\n");
	tiny_reset();
}
