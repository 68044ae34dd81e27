/*
 * Writes the committed seed corpora (tests/fuzz/corpus/<target>/): a few
 * well-formed inputs per target, so fuzzing starts from the interesting
 * paths. Built and run by hand (see run.sh --seeds); the ELF seed is a
 * tiny guest payload and the state seed a real snapshot, both copied by
 * run.sh.
 *   make_seeds DIR [TINY_PAYLOAD.elf]
 * With a payload (needs /dev/kvm), also the ELF seed (the payload itself)
 * and the state seed (a snapshot of it with a disk, vsock and rng).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microvm.h>
#include <unistd.h>

#include "agent/proto.h"
#include "snapshot/state.h"

static const char *dir;

static void put(const char *target, const char *name, const void *p, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, len, f) != len) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

static void p16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void p32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void p64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* tests/fuzz/fuzz.h chain format: n, (len16, flags) per segment, data. */
static size_t chain(uint8_t *out, const uint16_t *len, const uint8_t *wr, unsigned n,
		    const void *data, size_t dlen)
{
	size_t at = 0;
	out[at++] = (uint8_t)(n - 1);
	for (unsigned i = 0; i < n; i++) {
		p16(out + at, len[i]);
		out[at + 2] = wr[i];
		at += 3;
	}
	memcpy(out + at, data, dlen);
	return at + dlen;
}

static void blk_seeds(void)
{
	static const uint32_t types[] = { 0, 1, 4, 8, 11, 13 }; /* IN OUT FLUSH GET_ID DISCARD WZ */
	for (unsigned i = 0; i < 6; i++) {
		uint8_t buf[2048], hdr[16 + 512 + 16];
		memset(hdr, 0, sizeof(hdr));
		p32(hdr, types[i]);
		p64(hdr + 8, 3);
		uint16_t len[3] = { 16, 512, 1 };
		uint8_t wr[3] = { 0, types[i] == 0 || types[i] == 8, 1 };
		if (types[i] == 11 || types[i] == 13) { /* one segment descriptor */
			len[1] = 16;
			p64(hdr + 16, 8);
			p32(hdr + 24, 8);
		}
		buf[0] = 0; /* read-write disk */
		size_t n = chain(buf + 1, len, wr, 3, hdr, 16 + (wr[1] ? 0 : len[1]));
		char name[16];
		snprintf(name, sizeof(name), "type%u", types[i]);
		put("blk", name, buf, n + 1);
	}
}

static void vsock_seeds(void)
{
	static const uint16_t ops[] = { 1, 2, 3, 4, 5, 6, 7 };
	for (unsigned i = 0; i < 7; i++) {
		uint8_t pkt[44 + 8], buf[128];
		memset(pkt, 0, sizeof(pkt));
		p64(pkt, 3);          /* src_cid: the guest */
		p64(pkt + 8, 2);      /* dst_cid: the host */
		p32(pkt + 16, 1234);  /* src_port */
		p32(pkt + 20, 5000);  /* dst_port */
		p32(pkt + 24, ops[i] == 5 ? 8 : 0);
		p16(pkt + 28, 1);     /* STREAM */
		p16(pkt + 30, ops[i]);
		p32(pkt + 36, 65536); /* buf_alloc */
		memcpy(pkt + 44, "payload!", 8);
		uint16_t len[2] = { 44, 8 };
		uint8_t wr[2] = { 0, 0 };
		size_t n = chain(buf, len, wr, ops[i] == 5 ? 2 : 1, pkt, ops[i] == 5 ? 52 : 44);
		char name[16];
		snprintf(name, sizeof(name), "op%u", ops[i]);
		put("vsock", name, buf, n);
	}
}

static void net_seeds(void)
{
	uint8_t frame[12 + 60], buf[256];
	memset(frame, 0, sizeof(frame));
	frame[0] = 1;              /* NEEDS_CSUM */
	p16(frame + 6, 34);        /* csum_start */
	p16(frame + 8, 16);        /* csum_offset */
	memset(frame + 12, 0xff, 6);
	frame[12 + 12] = 0x08;     /* IPv4 */
	uint16_t len[2] = { 12, 60 };
	uint8_t wr[2] = { 0, 0 };
	buf[0] = 0;
	size_t n = chain(buf + 1, len, wr, 2, frame, sizeof(frame));
	put("net", "csum", buf, n + 1);
	frame[0] = 0;
	frame[1] = 1;              /* GSO_TCPV4 */
	p16(frame + 4, 1400);
	n = chain(buf + 1, len, wr, 2, frame, sizeof(frame));
	buf[0] = 2;                /* MRG_RXBUF */
	put("net", "gso", buf, n + 1);
}

static void virtq_seeds(void)
{
	/* size 4 (byte0 = 2), indirect; desc 0 -> 1 chain, desc 2 indirect */
	uint8_t buf[4 + 64 + 14 + 32];
	memset(buf, 0, sizeof(buf));
	buf[0] = 2;
	buf[1] = 1;
	uint8_t *d = buf + 4;
	p64(d, 0x100000); p32(d + 8, 64); p16(d + 12, 1); p16(d + 14, 1);
	p64(d + 16, 0x101000); p32(d + 24, 64); p16(d + 28, 2);
	p64(d + 32, 0x40000); p32(d + 40, 32); p16(d + 44, 4);
	uint8_t *a = buf + 4 + 64;
	p16(a + 2, 2);  /* avail idx */
	p16(a + 4, 0);  /* ring[0] = 0 */
	p16(a + 6, 2);  /* ring[1] = 2 */
	uint8_t *ind = buf + 4 + 64 + 14;
	p64(ind, 0x102000); p32(ind + 8, 16); p16(ind + 12, 1); p16(ind + 14, 1);
	p64(ind + 16, 0x103000); p32(ind + 24, 16); p16(ind + 28, 2);
	put("virtq", "two-chains", buf, sizeof(buf));
}

static void bzimage_seed(void)
{
	static uint8_t img[5 * 512 + 4096];
	memset(img, 0, sizeof(img));
	img[0x1f1] = 4;
	p16(img + 0x1fe, 0xaa55);
	img[0x201] = 0x6a;
	memcpy(img + 0x202, "HdrS", 4);
	p16(img + 0x206, 0x020f);
	img[0x211] = 1;              /* LOADED_HIGH */
	p32(img + 0x22c, 0x7fffffff);
	p32(img + 0x230, 0x200000);
	img[0x234] = 1;              /* relocatable */
	p16(img + 0x236, 3);
	p32(img + 0x238, 2047);
	p64(img + 0x258, 0x1000000);
	p32(img + 0x260, 0x100000);
	put("bzimage", "minimal", img, sizeof(img));
}

static void agent_seeds(void)
{
	struct agent_buf b = { 0 };
	const char *argv[] = { "/bin/sh", "-c", "echo hi", "PATH=/bin" };
	struct agent_rusage ru = { 0 };
	agent_enc_hello(&b, AGENT_PROTO_VERSION, 3, "0.4.0");
	agent_enc_exec(&b, 1, argv, 3, argv + 3, 1, "/tmp", "nobody");
	agent_enc_started(&b, 42);
	agent_enc_bytes(&b, AGENT_MSG_STDOUT, "hello\n", 6);
	agent_enc_exit(&b, 0, 0, 1, &ru);
	put("agent_proto", "exec-session", b.data, b.len);
	agent_buf_free(&b);
	memset(&b, 0, sizeof(b));
	agent_enc_put_file(&b, "/tmp/f", 0644, 0);
	agent_enc_bytes(&b, AGENT_MSG_DATA, "data", 4);
	agent_enc_end(&b, 4);
	agent_enc_get_file(&b, "/etc/hostname", 0);
	agent_enc_reseed(&b, 0, "0123456789abcdef", 16);
	agent_enc_signal(&b, 9);
	agent_enc_empty(&b, AGENT_MSG_PING);
	agent_enc_ok(&b, 7);
	agent_enc_error(&b, 2, "no such file");
	put("agent_proto", "files-misc", b.data, b.len);
	agent_buf_free(&b);
}

static void copy_file(const char *from, const char *target, const char *name)
{
	FILE *f = fopen(from, "rb");
	static uint8_t buf[1 << 20];
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (!f || n == 0 || n == sizeof(buf)) {
		perror(from);
		exit(1);
	}
	fclose(f);
	put(target, name, buf, n);
}

static void vm_seeds(const char *payload)
{
	char tmp[] = "/tmp/microvm-seeds-XXXXXX", path[600], snap[600];
	if (!mkdtemp(tmp))
		exit(1);
	copy_file(payload, "elf", "tiny");
	snprintf(path, sizeof(path), "%s/disk", tmp);
	FILE *d = fopen(path, "w");
	if (!d || ftruncate(fileno(d), 1 << 20) < 0)
		exit(1);
	fclose(d);
	microvm *vm = NULL;
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = path;
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	vc.guest_cid = 3;
	snprintf(snap, sizeof(snap), "%s/snap", tmp);
	if (microvm_create(&vm) || microvm_set_memory(vm, 16) ||
	    microvm_set_kernel(vm, payload, NULL) || microvm_add_disk(vm, &dc) < 0 ||
	    microvm_set_vsock(vm, &vc) || microvm_set_rng(vm, 1) || microvm_start(vm) ||
	    microvm_pause(vm) || microvm_snapshot(vm, snap, 0)) {
		fprintf(stderr, "snapshot: %s\n", microvm_last_error(vm));
		exit(1);
	}
	microvm_destroy(vm);
	snprintf(path, sizeof(path), "%s/" SNAPSHOT_STATE_FILE, snap);
	copy_file(path, "state", "snapshot");
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3) {
		fprintf(stderr, "usage: %s DIR [TINY_PAYLOAD.elf]\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	if (argc == 3)
		vm_seeds(argv[2]);
	blk_seeds();
	vsock_seeds();
	net_seeds();
	virtq_seeds();
	bzimage_seed();
	agent_seeds();
	return 0;
}
