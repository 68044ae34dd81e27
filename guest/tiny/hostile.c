/*
 * A hostile virtio driver: "case=N" on the command line picks what it does to
 * the devices (tests/kvm/test_hostile.c says what the host expects). It
 * finds devices by ID in the virtio-mmio slots from 0xd0000000, reports each
 * step as "hostile: ..." on COM1 (or the virtio-console's emerg_wr for the
 * console case), and ends with a reset, except the cases that must keep
 * running (a guest that never reads).
 *
 * After most attacks it resets the device, sets it up properly and checks
 * one honest request still works ("recovered").
 */
#include "tiny.h"

#define SLOT(i) (0xd0000000ULL + (uint64_t)(i) * 0x1000)
#define QSIZE 8

#define ID_BLK 2
#define ID_CONSOLE 3
#define ID_RNG 4
#define ID_VSOCK 19

#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define ST_NEEDS_RESET 64

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags, idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };

/* One queue's three areas, each on its own page. */
struct vq {
	struct desc desc[16] __attribute__((aligned(4096))); /* 16 for the blk case */
	struct avail avail __attribute__((aligned(4096)));
	struct used used __attribute__((aligned(4096)));
	uint16_t seen; /* used.idx already consumed */
};

static struct vq vqs[3] __attribute__((aligned(4096)));
static uint8_t buf[65536 * 4] __attribute__((aligned(4096)));
static struct desc big_table[2048] __attribute__((aligned(16)));

static void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static uint32_t rd(uint64_t b, uint32_t off) { return mmio_read32(b + off); }
static void wr(uint64_t b, uint32_t off, uint32_t v) { mmio_write32(b + off, v); }

static void say3(const char *a, const char *b, const char *c)
{
	tiny_puts("hostile: ");
	tiny_puts(a);
	tiny_puts(b);
	tiny_puts(c);
	tiny_puts("\n");
}

static void say(const char *a, const char *b) { say3(a, b, ""); }

static uint64_t find(uint32_t id)
{
	for (int i = 0; i < 8; i++)
		if (rd(SLOT(i), 0) == 0x74726976 && rd(SLOT(i), 8) == id)
			return SLOT(i);
	say("no device of the wanted kind", "");
	tiny_reset();
}

/* Reset, negotiate VERSION_1 (+ @lo feature bits), set up @nq queues. */
static void dev_init(uint64_t b, uint32_t lo, int nq, uint16_t size)
{
	wr(b, 0x70, 0);
	wr(b, 0x70, ST_ACK | ST_DRIVER);
	wr(b, 0x24, 0);
	wr(b, 0x20, lo);
	wr(b, 0x24, 1);
	wr(b, 0x20, 1); /* VERSION_1 */
	wr(b, 0x70, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
	for (int q = 0; q < nq; q++) {
		memset(&vqs[q], 0, sizeof(vqs[q]));
		wr(b, 0x30, (uint32_t)q);
		wr(b, 0x38, size);
		wr(b, 0x80, (uint32_t)(uintptr_t)vqs[q].desc);
		wr(b, 0x84, 0);
		wr(b, 0x90, (uint32_t)(uintptr_t)&vqs[q].avail);
		wr(b, 0x94, 0);
		wr(b, 0xa0, (uint32_t)(uintptr_t)&vqs[q].used);
		wr(b, 0xa4, 0);
		wr(b, 0x44, 1);
	}
	wr(b, 0x70, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
}

static void submit(uint64_t b, int q, uint16_t head)
{
	struct vq *v = &vqs[q];
	v->avail.ring[v->avail.idx % QSIZE] = head;
	barrier();
	*(volatile uint16_t *)&v->avail.idx = (uint16_t)(v->avail.idx + 1);
	barrier();
	wr(b, 0x50, (uint32_t)q);
}

/* 0: the device used a buffer; 1: it set DEVICE_NEEDS_RESET; 2: neither. */
static int wait_used(uint64_t b, int q)
{
	struct vq *v = &vqs[q];
	/* Bounded in instructions (an emulated KVM runs ~1-2 M/s); the status
	 * register, an exit to the host, is read every 64 spins. */
	for (uint32_t spins = 0; spins < 400000; spins++) {
		if (*(volatile uint16_t *)&v->used.idx != v->seen) {
			v->seen++;
			return 0;
		}
		if (!(spins & 63) && (rd(b, 0x70) & ST_NEEDS_RESET))
			return 1;
		cpu_relax();
	}
	if (rd(b, 0x70) & ST_NEEDS_RESET)
		return 1;
	return 2;
}

static const char *outcome(int r)
{
	return r == 0 ? "used" : r == 1 ? "needs-reset" : "no-answer";
}

/* One honest entropy request on a freshly set up device. */
static void rng_recover(uint64_t b, uint32_t feat)
{
	dev_init(b, feat, 1, QSIZE);
	vqs[0].desc[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 64, F_WRITE, 0 };
	submit(b, 0, 0);
	int r = wait_used(b, 0);
	if (r == 0 && vqs[0].used.ring[0].len > 0)
		say("recovered", "");
	else
		say("NOT recovered: ", outcome(r));
}

/* Submit descriptor 0 as set up by the caller and report what happened. */
static void rng_attack(uint64_t b, const char *what)
{
	submit(b, 0, 0);
	say3(what, ": ", outcome(wait_used(b, 0)));
}

static void case_rng_descriptors(uint64_t b)
{
	struct desc *d = vqs[0].desc;
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ 0x7fff00000000ULL, 64, F_WRITE, 0 };
	rng_attack(b, "outside RAM");
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ 0xfffffffffffff000ULL, 0x2000, F_WRITE, 0 };
	rng_attack(b, "addr+len wraps");
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ 0xfff000, 0x2000, F_WRITE, 0 }; /* 16 MiB RAM ends at 0x1000000 */
	rng_attack(b, "straddles the end of RAM");
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 16, F_WRITE | F_NEXT, 1 };
	d[1] = (struct desc){ (uint64_t)(uintptr_t)buf + 16, 16, F_WRITE | F_NEXT, 0 };
	rng_attack(b, "chain cycle");
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 16, F_WRITE | F_NEXT, 0 };
	rng_attack(b, "self loop");
	dev_init(b, 0, 1, QSIZE);
	d[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 16, F_WRITE | F_NEXT, 200 };
	rng_attack(b, "next beyond the table");
	rng_recover(b, 0);
}

static void case_rng_indirect(uint64_t b)
{
	uint32_t ind = 1u << 28;
	struct desc *d = vqs[0].desc;
	dev_init(b, ind, 1, QSIZE);
	d[0] = (struct desc){ (uint64_t)(uintptr_t)big_table, sizeof(big_table), F_INDIRECT, 0 };
	rng_attack(b, "indirect table of 2048 entries");
	dev_init(b, ind, 1, QSIZE);
	d[0] = (struct desc){ 0x7fff00000000ULL, 64, F_INDIRECT, 0 };
	rng_attack(b, "indirect table outside RAM");
	dev_init(b, ind, 1, QSIZE);
	for (int i = 0; i < 4; i++)
		big_table[i] = (struct desc){ (uint64_t)(uintptr_t)buf, 8, F_WRITE | F_NEXT,
					      (uint16_t)((i + 1) % 4) };
	d[0] = (struct desc){ (uint64_t)(uintptr_t)big_table, 4 * 16, F_INDIRECT, 0 };
	rng_attack(b, "cycle inside an indirect table");
	dev_init(b, ind, 1, QSIZE);
	big_table[0] = (struct desc){ (uint64_t)(uintptr_t)big_table, 16, F_INDIRECT, 0 };
	d[0] = (struct desc){ (uint64_t)(uintptr_t)big_table, 16, F_INDIRECT, 0 };
	rng_attack(b, "indirect inside indirect");
	rng_recover(b, ind);
}

static void case_rng_avail_jump(uint64_t b)
{
	dev_init(b, 0, 1, QSIZE);
	vqs[0].desc[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 64, F_WRITE, 0 };
	*(volatile uint16_t *)&vqs[0].avail.idx = 1000; /* 1000 new chains in a ring of 8 */
	barrier();
	wr(b, 0x50, 0);
	say("avail index +1000: ", outcome(wait_used(b, 0)));
	rng_recover(b, 0);
}

static void case_rng_queue_size(uint64_t b)
{
	dev_init(b, 0, 1, QSIZE);
	wr(b, 0x38, 2); /* while the queue is ready: must be ignored */
	vqs[0].desc[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 64, F_WRITE, 0 };
	submit(b, 0, 0);
	say("size written while ready: ", outcome(wait_used(b, 0)));
	wr(b, 0x44, 0); /* not ready, a size that is not a power of two, ready again */
	wr(b, 0x38, 3);
	wr(b, 0x44, 1);
	say("size 3 while running: ", (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "accepted");
	dev_init(b, 0, 1, QSIZE);
	wr(b, 0x44, 0);
	wr(b, 0x38, 0x10000);
	wr(b, 0x44, 1);
	say("size 65536: ", (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "accepted");
	dev_init(b, 0, 1, QSIZE);
	wr(b, 0x44, 0); /* shrink to 1 with a chain still pending in slot 7 */
	wr(b, 0x38, 1);
	wr(b, 0x44, 1);
	vqs[0].desc[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 64, F_WRITE, 0 };
	vqs[0].avail.ring[0] = 7;
	*(volatile uint16_t *)&vqs[0].avail.idx = 1;
	barrier();
	wr(b, 0x50, 0);
	say("head 7 in a ring of 1: ", outcome(wait_used(b, 0)));
	rng_recover(b, 0);
}

static void case_notify_storm(uint64_t b)
{
	dev_init(b, 0, 1, QSIZE);
	for (uint32_t i = 0; i < 100000; i++)
		wr(b, 0x50, i & 1 ? 0 : 7); /* queue 0 (empty) and a queue that does not exist */
	say("100000 notifies sent", "");
	rng_recover(b, 0);
}

/* Accesses of every size at odd places; prints a checksum of what was read. */
static void case_odd_access(uint64_t b)
{
	uint64_t sum = 0;
	static const uint64_t where[] = { 0x70, 0x71, 0x33, 0x102, 0xffc, 0xfff };
	for (unsigned i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(b + where[i]);
		sum += p[0];
		sum += *(volatile uint16_t *)(uintptr_t)(b + where[i]);
		sum += *(volatile uint32_t *)(uintptr_t)(b + where[i]);
		sum += *(volatile uint64_t *)(uintptr_t)(b + where[i]);
		*(volatile uint32_t *)(uintptr_t)(b + where[i]) = 0x5a5a5a5a;
		*(volatile uint16_t *)(uintptr_t)(b + where[i]) = 0x5a5a;
		*(volatile uint64_t *)(uintptr_t)(b + where[i]) = 0x5a5a5a5a5a5a5a5aULL;
		p[0] = 0x5a;
	}
	static const uint64_t unassigned[] = { 0xc0000000ULL, 0xd0007ffdULL, 0xfebff001ULL };
	for (unsigned i = 0; i < 3; i++) {
		sum += *(volatile uint8_t *)(uintptr_t)unassigned[i];
		sum += *(volatile uint32_t *)(uintptr_t)unassigned[i];
		sum += *(volatile uint64_t *)(uintptr_t)unassigned[i];
		*(volatile uint64_t *)(uintptr_t)unassigned[i] = ~0ULL;
		*(volatile uint16_t *)(uintptr_t)unassigned[i] = 0x1234;
	}
	static const uint16_t ports[] = { 0x1234, 0x3f9, 0x3fb, 0x2f0, 0xcfd, 0xffff };
	for (unsigned i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		uint16_t w;
		uint32_t l;
		__asm__ volatile("inw %1, %0" : "=a"(w) : "Nd"(ports[i]));
		__asm__ volatile("inl %1, %0" : "=a"(l) : "Nd"(ports[i]));
		sum += w + l;
		if (ports[i] != 0x3f9 && ports[i] != 0x3fb) /* leave the UART set up */
			__asm__ volatile("outl %0, %1" :: "a"(0xdeadbeefu), "Nd"(ports[i]));
		__asm__ volatile("outw %0, %1" :: "a"((uint16_t)0), "Nd"((uint16_t)0x1234));
	}
	tiny_puts("hostile: odd accesses done, sum ");
	tiny_puthex(sum);
	tiny_puts("\n");
	rng_recover(b, 0);
}

static void case_used_over_desc(uint64_t b)
{
	dev_init(b, 0, 1, QSIZE);
	wr(b, 0x44, 0);
	wr(b, 0xa0, (uint32_t)(uintptr_t)vqs[0].desc); /* used ring over the descriptors */
	wr(b, 0x44, 1);
	for (int i = 0; i < 4; i++) {
		vqs[0].desc[0] = (struct desc){ (uint64_t)(uintptr_t)buf, 64, F_WRITE, 0 };
		submit(b, 0, 0);
		for (volatile int s = 0; s < 20000; s++)
			;
	}
	say("used ring over the descriptor table: status ",
	    (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "ok");
	rng_recover(b, 0);
}

/* virtio-blk: requests in flight when the driver resets the device. */
struct blk_hdr { uint32_t type, reserved; uint64_t sector; };
static struct blk_hdr bhdr[4];
static volatile uint8_t bstatus[4];

static void blk_read(int slot, uint64_t sector, uint32_t len)
{
	bhdr[slot] = (struct blk_hdr){ 0, 0, sector };
	bstatus[slot] = 0xff;
	struct desc *d = vqs[0].desc + 3 * slot;
	uint16_t h = (uint16_t)(3 * slot);
	d[0] = (struct desc){ (uint64_t)(uintptr_t)&bhdr[slot], 16, F_NEXT, (uint16_t)(h + 1) };
	d[1] = (struct desc){ (uint64_t)(uintptr_t)buf + (uint64_t)slot * 65536, len,
			      F_WRITE | F_NEXT, (uint16_t)(h + 2) };
	d[2] = (struct desc){ (uint64_t)(uintptr_t)&bstatus[slot], 1, F_WRITE, 0 };
}

static void case_blk_reset_during_io(uint64_t b)
{
	for (int round = 0; round < 20; round++) {
		dev_init(b, 0, 1, 16);
		for (int i = 0; i < 4; i++)
			blk_read(i, (uint64_t)i * 128, 65536);
		for (int i = 0; i < 4; i++) {
			vqs[0].avail.ring[i] = (uint16_t)(3 * i);
		}
		barrier();
		*(volatile uint16_t *)&vqs[0].avail.idx = 4;
		barrier();
		wr(b, 0x50, 0);
		wr(b, 0x70, 0); /* reset with the reads in flight */
	}
	say("20 resets with 4 reads in flight each", "");
	dev_init(b, 0, 1, 16);
	blk_read(0, 0, 512);
	vqs[0].avail.ring[0] = 0;
	barrier();
	*(volatile uint16_t *)&vqs[0].avail.idx = 1;
	barrier();
	wr(b, 0x50, 0);
	int r = wait_used(b, 0);
	if (r == 0 && bstatus[0] == 0 && buf[0] == 'M')
		say("recovered", "");
	else
		say("NOT recovered: ", outcome(r));
}

/* virtio-blk: the queue made not ready, resized and made ready again (no
 * device reset) while reads are in flight: their completions belong to a
 * ring that is gone. */
static void case_blk_resize_during_io(uint64_t b)
{
	int needs_reset = 0;
	for (int round = 0; round < 20; round++) {
		dev_init(b, 0, 1, 16);
		for (int i = 0; i < 4; i++) {
			blk_read(i, (uint64_t)i * 128, 65536);
			vqs[0].avail.ring[i] = (uint16_t)(3 * i);
		}
		barrier();
		*(volatile uint16_t *)&vqs[0].avail.idx = 4;
		barrier();
		wr(b, 0x50, 0);
		wr(b, 0x44, 0);
		wr(b, 0x38, 2); /* heads 3, 6, 9 no longer exist */
		wr(b, 0x44, 1);
		for (volatile int s = 0; s < 20000; s++)
			;
		needs_reset += (rd(b, 0x70) & ST_NEEDS_RESET) != 0;
	}
	tiny_puts("hostile: 20 resizes with 4 reads in flight each, needs-reset after ");
	tiny_putdec((uint64_t)needs_reset);
	tiny_puts("\n");
	dev_init(b, 0, 1, 16);
	blk_read(0, 0, 512);
	vqs[0].avail.ring[0] = 0;
	barrier();
	*(volatile uint16_t *)&vqs[0].avail.idx = 1;
	barrier();
	wr(b, 0x50, 0);
	int r = wait_used(b, 0);
	if (r == 0 && bstatus[0] == 0 && buf[0] == 'M')
		say("recovered", "");
	else
		say("NOT recovered: ", outcome(r));
}

/* virtio-net: malformed transmit chains (counted as tx_malformed), one
 * honest frame, then no receive buffer ever. */
#define ID_NET 1
static uint8_t net_hdr[12];

static void net_tx(uint64_t b, uint32_t hdr_len, uint32_t frame_len, uint16_t frame_flags)
{
	struct desc *d = vqs[1].desc;
	d[0] = (struct desc){ (uint64_t)(uintptr_t)net_hdr, hdr_len, frame_len ? F_NEXT : 0, 1 };
	d[1] = (struct desc){ (uint64_t)(uintptr_t)buf, frame_len, frame_flags, 0 };
	submit(b, 1, 0);
	wait_used(b, 1);
}

static void case_net(uint64_t b)
{
	dev_init(b, 0, 2, QSIZE);
	memset(net_hdr, 0, sizeof(net_hdr));
	memset(buf, 0xee, 70000);
	net_tx(b, 4, 0, 0);            /* shorter than the header */
	net_tx(b, 12, 0, 0);           /* a header and no frame */
	net_tx(b, 12, 70000, 0);       /* a frame over the 65550-byte maximum */
	net_tx(b, 12, 10, 0);          /* shorter than an Ethernet header */
	net_tx(b, 12, 60, F_WRITE);    /* device-writable */
	net_hdr[1] = 1;                /* gso_type TCPV4: not offered */
	net_tx(b, 12, 60, 0);
	net_hdr[1] = 0;
	net_tx(b, 12, 60, 0);          /* an honest frame */
	say("net frames sent, device status ", (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "ok");
	tiny_halt_forever();
}

/* ---------------------------------------------------------------- vsock */

struct __attribute__((packed)) vhdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
};

static struct vhdr txh;
static uint8_t rxbufs[QSIZE][4096] __attribute__((aligned(64)));

static void vsock_post_rx(uint64_t b, int n)
{
	for (int i = 0; i < n; i++) {
		vqs[0].desc[i] = (struct desc){ (uint64_t)(uintptr_t)rxbufs[i], 4096, F_WRITE, 0 };
		submit(b, 0, (uint16_t)i);
	}
}

/* Send txh (its len field as set) with @payload_len bytes of buf after it
 * (@hdr_len bytes of header: less than 44 is a lie too). */
static void vsock_send(uint64_t b, uint32_t hdr_len, uint32_t payload_len)
{
	struct desc *d = vqs[1].desc;
	d[0] = (struct desc){ (uint64_t)(uintptr_t)&txh, hdr_len, payload_len ? F_NEXT : 0, 1 };
	d[1] = (struct desc){ (uint64_t)(uintptr_t)buf, payload_len, 0, 0 };
	submit(b, 1, 0);
	wait_used(b, 1);
}

static void vsock_hdr(uint32_t src_port, uint32_t dst_port, uint16_t op, uint32_t len)
{
	txh = (struct vhdr){ 3, 2, src_port, dst_port, len, 1, op, 0, 1u << 20, 0 };
}

/* Wait for a packet with operation @op on the rx queue (others skipped);
 * returns 1 if one came. Each buffer used is posted again. */
static int vsock_wait_op(uint64_t b, uint16_t op)
{
	for (int n = 0; n < 2 * QSIZE; n++) {
		if (wait_used(b, 0) != 0)
			return 0;
		struct used_elem e = vqs[0].used.ring[(uint16_t)(vqs[0].seen - 1) % QSIZE];
		uint16_t id = (uint16_t)(e.id % QSIZE);
		uint16_t got = ((struct vhdr *)(void *)rxbufs[id])->op;
		submit(b, 0, id); /* the descriptor still points at rxbufs[id] */
		if (got == op)
			return 1;
	}
	return 0;
}

static int vsock_wait_response(uint64_t b) { return vsock_wait_op(b, 2); }

static void case_vsock_lies(uint64_t b, uint32_t port)
{
	dev_init(b, 0, 3, QSIZE);
	vsock_post_rx(b, QSIZE);
	vsock_hdr(1234, port, 5, 60000); /* RW: says 60000, carries 16 */
	vsock_send(b, 44, 16);
	vsock_hdr(1234, port, 5, 0x80000000u);
	vsock_send(b, 44, 16);
	vsock_hdr(1234, port, 1, 0);
	vsock_send(b, 20, 0); /* a header cut short */
	vsock_hdr(1234, port, 5, 16);
	txh.dst_cid = 7; /* to someone else */
	vsock_send(b, 44, 16);
	vsock_hdr(1234, port, 99, 0); /* unknown op */
	vsock_send(b, 44, 0);
	vsock_hdr(1234, port, 1, 0);
	txh.type = 3; /* not a stream */
	vsock_send(b, 44, 0);
	say("lying vsock packets sent, device status ",
	    (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "ok");
	/* The device still works: an honest connection to the host. */
	vsock_hdr(1235, port, 1, 0);
	vsock_send(b, 44, 0);
	say(vsock_wait_response(b) ? "recovered" : "NOT recovered", "");
	/* On that live stream: data whose header claims more than it carries. */
	vsock_hdr(1235, port, 5, 1000);
	vsock_send(b, 44, 16);
	say(vsock_wait_op(b, 3) ? "stream with a lying RW: RST" : "stream with a lying RW: no RST", "");
}

/* Connect to the host, then never give the device another rx buffer. */
static void case_vsock_never_reads(uint64_t b, uint32_t port)
{
	dev_init(b, 0, 3, QSIZE);
	vsock_post_rx(b, 1);
	vsock_hdr(1236, port, 1, 0);
	vsock_send(b, 44, 0);
	say(vsock_wait_response(b) ? "connected, not reading any more" : "NOT connected", "");
	/* Connection requests the device must refuse (RST) with nowhere to
	 * put the RSTs: to ports nobody listens on, and to the host's port,
	 * whose listener does not accept them. */
	for (uint32_t i = 0; i < 1000; i++) {
		vsock_hdr(3000 + i, 6000 + i, 1, 0);
		vsock_send(b, 44, 0);
		vsock_hdr(10000 + i, port, 1, 0);
		vsock_send(b, 44, 0);
	}
	say("2000 connection requests sent", "");
	tiny_halt_forever();
}

/* virtio-console: output through emerg_wr; the receive queue gets no
 * buffer, ever. */
static void console_say(uint64_t b, const char *s)
{
	for (; *s; s++)
		wr(b, 0x108, (uint8_t)*s);
}

static void case_console_never_reads(uint64_t b)
{
	dev_init(b, 0, 2, QSIZE);
	console_say(b, "hostile: console up, not reading\n");
	tiny_halt_forever();
}

/* virtio-console output the host never takes (a full pipe): transmit
 * chains and emerg_wr characters must not block the vCPU or grow the host. */
static void case_console_output_flood(uint64_t b)
{
	dev_init(b, 0, 2, QSIZE);
	memset(buf, 'o', sizeof(buf));
	int used = 0;
	for (int i = 0; i < 4; i++) {
		vqs[1].desc[i] = (struct desc){ (uint64_t)(uintptr_t)buf + (uint64_t)i * 65536,
						65536, 0, 0 };
		submit(b, 1, (uint16_t)i);
	}
	for (int i = 0; i < 4; i++)
		used += wait_used(b, 1) == 0;
	for (uint32_t i = 0; i < 50000; i++)
		wr(b, 0x108, 'e');
	(void)used;
	tiny_reset(); /* reaching this is the result: the vCPU was never stuck */
}

/* Device registers left in states the device refuses to use (a queue that
 * is not ready, with a bad size and addresses outside RAM; another device
 * with DEVICE_NEEDS_RESET set), then halt: the host snapshots and restores
 * this VM. */
static void case_junk_registers(uint64_t b)
{
	dev_init(b, 0, 1, QSIZE);
	vqs[0].desc[0] = (struct desc){ 0x7fff00000000ULL, 64, F_WRITE, 0 };
	submit(b, 0, 0);
	wait_used(b, 0); /* now DEVICE_NEEDS_RESET */
	wr(b, 0x30, 0);
	wr(b, 0x44, 0);
	wr(b, 0x38, 3);
	wr(b, 0x80, 0xffff0000u);
	wr(b, 0x84, 0xffffffffu);
	wr(b, 0x30, 5); /* a queue that does not exist */
	wr(b, 0x24, 7); /* a features window that does not exist */
	say("junk left in the registers, status ",
	    (rd(b, 0x70) & ST_NEEDS_RESET) ? "needs-reset" : "ok");
	tiny_halt_forever();
}

void main(void *boot_params)
{
	uint64_t c = tiny_cmdline_num(boot_params, "case", 0);
	uint32_t port = (uint32_t)tiny_cmdline_num(boot_params, "port", 5000);
	switch (c) {
	case 1: case_rng_descriptors(find(ID_RNG)); break;
	case 2: case_rng_indirect(find(ID_RNG)); break;
	case 3: case_rng_avail_jump(find(ID_RNG)); break;
	case 4: case_rng_queue_size(find(ID_RNG)); break;
	case 5: case_notify_storm(find(ID_RNG)); break;
	case 6: case_odd_access(find(ID_RNG)); break;
	case 7: case_used_over_desc(find(ID_RNG)); break;
	case 8: case_blk_reset_during_io(find(ID_BLK)); break;
	case 9: case_vsock_lies(find(ID_VSOCK), port); break;
	case 10: case_vsock_never_reads(find(ID_VSOCK), port); break;
	case 11: case_console_never_reads(find(ID_CONSOLE)); break;
	case 12: case_blk_resize_during_io(find(ID_BLK)); break;
	case 13: case_net(find(ID_NET)); break;
	case 14: case_console_output_flood(find(ID_CONSOLE)); break;
	case 15: case_junk_registers(find(ID_RNG)); break;
	default: say("unknown case", ""); break;
	}
	say("end", "");
	tiny_reset();
}
