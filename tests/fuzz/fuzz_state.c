/*
 * The snapshot state parser (lib/snapshot/state.c and the device decoders
 * restore runs on it): st_verify() on the raw input; then, for any input
 * libfdt accepts structurally (checksum or not: a defence in depth), the
 * readers on every node: typed getters, field tables, and the per-device
 * "config from state" decoders of virtio-mmio, blk, vsock and net.
 */
#include "fuzz.h"

#include <libfdt.h>

#include <microvm.h>

#include "snapshot/state.h"
#include "virtio/blk.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "virtio/vsock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fields {
	uint8_t a;
	uint16_t b;
	uint32_t c;
	uint64_t d;
};

static const struct st_field field_table[] = {
	ST_FIELD(struct fields, a, "a", 1),
	ST_FIELD(struct fields, b, "b", 0xffff),
	ST_FIELD(struct fields, c, "c", 100),
	ST_FIELD(struct fields, d, "d", UINT64_MAX),
};

static void read_node(const void *fdt, int node)
{
	char err[128];
	uint32_t u32;
	uint64_t u64;
	uint8_t blob[64];
	const void *p;
	size_t len;
	struct fields fl;
	(void)st_get_u32(fdt, node, "size", &u32, err, sizeof(err));
	(void)st_get_u64(fdt, node, "base", &u64, err, sizeof(err));
	(void)st_get_blob(fdt, node, "regs", blob, sizeof(blob), err, sizeof(err));
	if (st_get_var(fdt, node, "data", &p, &len, 4096, err, sizeof(err)) == 0 && len)
		(void)((volatile const uint8_t *)p)[len - 1];
	const char *s = st_get_str(fdt, node, "path");
	if (s)
		(void)strlen(s);
	(void)st_load_fields(fdt, node, &fl, field_table, 4, err, sizeof(err));
	(void)virtio_mmio_saved_id(fdt, node, &u32, err, sizeof(err));
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	(void)blk_config_from_state(fdt, node, &dc, serial, err, sizeof(err));
	const char *uds = NULL;
	(void)virtio_vsock_config_from_state(fdt, node, &u64, &uds, err, sizeof(err));
	struct net_dev_config nc;
	struct net_port_fwd fwds[64];
	memset(&nc, 0, sizeof(nc));
	(void)virtio_net_config_from_state(fdt, node, &nc, fwds, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	/* libfdt wants the blob 8-byte aligned: a copy */
	uint64_t *copy = malloc(size + 8);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	(void)st_verify(copy, size, err, sizeof(err));
	if (size >= sizeof(struct fdt_header) && fdt_totalsize(copy) <= size &&
	    fdt_check_full(copy, size) == 0) {
		int n = 0, depth = 0;
		for (int i = 0; n >= 0 && i < 256; i++) {
			read_node(copy, n);
			(void)st_sub(copy, n, "devices", err, sizeof(err));
			n = fdt_next_node(copy, n, &depth);
		}
	}
	free(copy);
	return 0;
}
