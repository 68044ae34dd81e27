/*
 * Unit tests for the firmware tables (lib/arch/x86_64/mptable.c, acpi.c):
 * each test writes the tables into guest RAM and reads them back the way a
 * guest does - scanning for the MP floating pointer and the RSDP, following
 * pointers, checking every checksum - then checks the fields against the
 * MultiProcessor Specification 1.4 and ACPI 6.3.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"
#include "arch/arch.h"
#include "memory.h"

#define RAM_SIZE (64 * MIB)
#define SMALL_RAM (512 * 1024) /* ends at 0x80000: no EBDA, no BIOS area */

/* ---------------------------------------------------------------- helpers */

static uint8_t rd8(const struct guest_mem *m, uint64_t gpa)
{
	const uint8_t *p = gm_ptr(m, gpa, 1);
	assert_non_null(p);
	return *p;
}

static uint16_t rd16(const struct guest_mem *m, uint64_t gpa)
{
	uint16_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

static uint32_t rd32(const struct guest_mem *m, uint64_t gpa)
{
	uint32_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

static uint64_t rd64(const struct guest_mem *m, uint64_t gpa)
{
	uint64_t v;
	assert_true(gm_read(m, gpa, &v, sizeof(v)));
	return v;
}

/* Sum of the bytes of [gpa, gpa + len) mod 256: 0 for a valid checksum. */
static uint8_t sum8(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gm_ptr(m, gpa, len);
	assert_non_null(p);
	uint8_t s = 0;
	for (uint64_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

static bool mem_eq(const struct guest_mem *m, uint64_t gpa, const char *s, size_t n)
{
	const void *p = gm_ptr(m, gpa, n);
	assert_non_null(p);
	return memcmp(p, s, n) == 0;
}

/* Whether the first MiB (where all the tables go) is untouched. */
static bool all_zero(const struct guest_mem *m)
{
	uint64_t n = m->size < MIB ? m->size : MIB;
	for (uint64_t i = 0; i < n; i++)
		if (m->host[i])
			return false;
	return true;
}

static int setup(void **state)
{
	static struct guest_mem mem;
	assert_int_equal(arch_ram_init(&mem, RAM_SIZE), 0);
	*state = &mem;
	return 0;
}

static int teardown(void **state)
{
	gm_release(*state);
	return 0;
}

/* ---------------------------------------------------------------- MP table */

/* Number of valid floating pointers on 16-byte boundaries in [lo, hi), the
 * address of the last one in *@at. */
static int scan_mpf(const struct guest_mem *m, uint64_t lo, uint64_t hi, uint64_t *at)
{
	int n = 0;
	for (uint64_t a = lo; a + MPF_SIZE <= hi; a += 16) {
		if (mem_eq(m, a, "_MP_", 4) && rd8(m, a + 8) == 1 && sum8(m, a, MPF_SIZE) == 0) {
			*at = a;
			n++;
		}
	}
	return n;
}

/* Find the floating pointer where Linux looks (EBDA KiB, BIOS ROM area),
 * check it and return the configuration table's address. */
static uint64_t find_mp_config(const struct guest_mem *m)
{
	uint64_t mpf = 0, unused;
	assert_int_equal(scan_mpf(m, EBDA_START, 0xa0000, &mpf), 1);
	assert_int_equal(scan_mpf(m, 0xf0000, 0x100000, &unused), 0);
	assert_int_equal(mpf, EBDA_START);
	assert_int_equal(rd8(m, mpf + 9), 4);  /* spec revision 1.4 */
	assert_int_equal(rd8(m, mpf + 11), 0); /* config table present */
	assert_int_equal(rd8(m, mpf + 12), 0); /* virtual wire, no IMCR */
	uint64_t cfg = rd32(m, mpf + 4);
	assert_int_not_equal(cfg, 0);
	return cfg;
}

static void check_mptable(const struct guest_mem *m, uint32_t ncpus)
{
	uint64_t cfg = find_mp_config(m);
	uint16_t len = rd16(m, cfg + 4);

	assert_true(mem_eq(m, cfg, "PCMP", 4));
	assert_int_equal(len, MPTABLE_CONFIG_SIZE(ncpus));
	assert_int_equal(rd8(m, cfg + 6), 4);
	assert_int_equal(sum8(m, cfg, len), 0);
	assert_int_equal(rd32(m, cfg + 28), 0); /* no OEM table */
	assert_int_equal(rd16(m, cfg + 40), 0); /* no extended table */
	assert_int_equal(rd32(m, cfg + 36), 0xfee00000);
	assert_int_equal(rd16(m, cfg + 34), ncpus + 1 + 1 + 16 + 2);

	/* The whole table lies in a reserved area, in the EBDA when it fits. */
	bool in_ebda = cfg >= EBDA_START + MPF_SIZE && cfg + len <= 0xa0000;
	bool in_bios = cfg >= MPTABLE_HIGH_ADDR && cfg + len <= 0x100000;
	assert_true(in_ebda || in_bios);
	assert_true(in_ebda == (ncpus <= MPTABLE_EBDA_MAX_CPUS));

	/* Walk the entries as Linux's smp_read_mpc() does. */
	uint32_t cpus = 0, buses = 0, ioapics = 0, iointr = 0, lintr = 0;
	uint8_t ioapic_id = 0xff;
	uint64_t e = cfg + MPC_HEADER_SIZE, end = cfg + len;
	while (e < end) {
		uint8_t type = rd8(m, e);
		switch (type) {
		case 0: /* processor */
			assert_int_equal(rd8(m, e + 1), cpus); /* APIC ID */
			assert_int_equal(rd8(m, e + 2), 0x14);
			assert_int_equal(rd8(m, e + 3), cpus == 0 ? 0x03 : 0x01);
			cpus++;
			e += 20;
			break;
		case 1: /* bus */
			assert_int_equal(rd8(m, e + 1), 0);
			assert_true(mem_eq(m, e + 2, "ISA   ", 6));
			buses++;
			e += 8;
			break;
		case 2: /* I/O APIC */
			ioapic_id = rd8(m, e + 1);
			assert_int_equal(ioapic_id, ncpus);
			assert_int_equal(rd8(m, e + 2), 0x11);
			assert_int_equal(rd8(m, e + 3), 0x01);
			assert_int_equal(rd32(m, e + 4), 0xfec00000);
			ioapics++;
			e += 8;
			break;
		case 3: /* I/O interrupt: ISA IRQ i -> IOAPIC pin i, INT, conforming */
			assert_int_equal(rd8(m, e + 1), 0);
			assert_int_equal(rd16(m, e + 2), 0);
			assert_int_equal(rd8(m, e + 4), 0); /* ISA bus */
			assert_int_equal(rd8(m, e + 5), iointr);
			assert_int_equal(rd8(m, e + 6), ioapic_id);
			assert_int_equal(rd8(m, e + 7), iointr);
			iointr++;
			e += 8;
			break;
		case 4: /* local interrupt: ExtINT -> LINT0, then NMI -> LINT1 */
			assert_int_equal(rd8(m, e + 1), lintr == 0 ? 3 : 1);
			assert_int_equal(rd16(m, e + 2), 0);
			assert_int_equal(rd8(m, e + 6), 0xff);
			assert_int_equal(rd8(m, e + 7), lintr);
			lintr++;
			e += 8;
			break;
		default:
			fail_msg("unknown MP entry type %u at 0x%llx", type, (unsigned long long)e);
		}
	}
	assert_int_equal(e, end);
	assert_int_equal(cpus, ncpus);
	assert_int_equal(buses, 1);
	assert_int_equal(ioapics, 1);
	assert_int_equal(iointr, 16);
	assert_int_equal(lintr, 2);
}

static void mptable_for(void **state, uint32_t ncpus)
{
	struct guest_mem *m = *state;
	char err[256] = "";
	assert_int_equal(mptable_write(m, ncpus, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	check_mptable(m, ncpus);
}

static void test_mptable_1(void **state) { mptable_for(state, 1); }
static void test_mptable_2(void **state) { mptable_for(state, 2); }
static void test_mptable_40(void **state) { mptable_for(state, MPTABLE_EBDA_MAX_CPUS); }
static void test_mptable_41(void **state) { mptable_for(state, MPTABLE_EBDA_MAX_CPUS + 1); }
static void test_mptable_64(void **state) { mptable_for(state, 64); }
static void test_mptable_max(void **state) { mptable_for(state, MPTABLE_MAX_CPUS); }

/* Rewriting with fewer vCPUs leaves exactly one valid table. */
static void test_mptable_rewrite(void **state)
{
	mptable_for(state, 200);
	mptable_for(state, 3);
	mptable_for(state, 200);
}

static void test_mptable_errors(void **state)
{
	struct guest_mem *m = *state;
	char err[256] = "";
	assert_int_equal(mptable_write(m, 0, err, sizeof(err)), -EINVAL);
	assert_true(strlen(err) > 0);
	err[0] = 0;
	assert_int_equal(mptable_write(m, MPTABLE_MAX_CPUS + 1, err, sizeof(err)), -E2BIG);
	assert_true(strlen(err) > 0);
	assert_int_equal(mptable_write(m, UINT32_MAX, err, sizeof(err)), -E2BIG);
	assert_true(all_zero(m));
}

static void test_mptable_small_ram(void **state)
{
	struct guest_mem small;
	char err[256] = "";
	assert_int_equal(arch_ram_init(&small, SMALL_RAM), 0);
	assert_int_equal(mptable_write(&small, 1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest RAM"));
	assert_int_equal(mptable_write(&small, 254, err, sizeof(err)), -EINVAL);
	assert_true(all_zero(&small));
	gm_release(&small);

	/* RAM that ends inside the EBDA KiB. */
	assert_int_equal(arch_ram_init(&small, 0xa0000 - 0x1000), 0);
	assert_int_equal(mptable_write(&small, 1, err, sizeof(err)), -EINVAL);
	assert_true(all_zero(&small));
	gm_release(&small);

	/* RAM that covers the EBDA but not the BIOS area: a small table fits,
	 * a large one does not. */
	assert_int_equal(arch_ram_init(&small, 0xa0000), 0);
	assert_int_equal(mptable_write(&small, 40, err, sizeof(err)), 0);
	memset(small.host, 0, small.size);
	assert_int_equal(mptable_write(&small, 41, err, sizeof(err)), -EINVAL);
	assert_true(all_zero(&small));
	gm_release(&small);
}

/* ---------------------------------------------------------------- ACPI */

struct acpi_found {
	uint64_t rsdp, xsdt, rsdt, fadt, madt, dsdt;
};

/* Check a system description table's header; returns its length. */
static uint32_t check_sdt(const struct guest_mem *m, uint64_t t, const char *sig)
{
	assert_true(mem_eq(m, t, sig, 4));
	uint32_t len = rd32(m, t + 4);
	assert_true(len >= 36);
	assert_int_equal(sum8(m, t, len), 0);
	assert_true(mem_eq(m, t + 10, "MICRVM", 6));
	assert_true(mem_eq(m, t + 16, "MICROVM ", 8));
	/* In the reserved area. */
	assert_true(t >= 0xe0000 && t + len <= ACPI_TABLES_END);
	return len;
}

/* Find everything from the RSDP, the way ACPICA does. */
static struct acpi_found find_acpi(const struct guest_mem *m, uint64_t rsdp_addr)
{
	struct acpi_found f = { 0 };
	int n = 0;
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
		if (mem_eq(m, a, "RSD PTR ", 8) && sum8(m, a, 20) == 0) {
			f.rsdp = a;
			n++;
		}
	}
	assert_int_equal(n, 1);
	assert_int_equal(f.rsdp, rsdp_addr);
	assert_int_equal(f.rsdp % 16, 0);
	assert_int_equal(rd8(m, f.rsdp + 15), 2);
	assert_int_equal(rd32(m, f.rsdp + 20), 36);
	assert_int_equal(sum8(m, f.rsdp, 36), 0);
	assert_true(mem_eq(m, f.rsdp + 9, "MICRVM", 6));

	f.xsdt = rd64(m, f.rsdp + 24);
	uint32_t len = check_sdt(m, f.xsdt, "XSDT");
	assert_int_equal((len - 36) % 8, 0);
	for (uint32_t off = 36; off < len; off += 8) {
		uint64_t t = rd64(m, f.xsdt + off);
		if (mem_eq(m, t, "FACP", 4)) {
			assert_int_equal(f.fadt, 0);
			f.fadt = t;
		} else if (mem_eq(m, t, "APIC", 4)) {
			assert_int_equal(f.madt, 0);
			f.madt = t;
		} else {
			fail_msg("unexpected table in the XSDT");
		}
		check_sdt(m, t, rd8(m, t) == 'F' ? "FACP" : "APIC");
	}
	assert_int_not_equal(f.fadt, 0);
	assert_int_not_equal(f.madt, 0);

	/* The RSDT lists the same tables. */
	f.rsdt = rd32(m, f.rsdp + 16);
	len = check_sdt(m, f.rsdt, "RSDT");
	assert_int_equal(len, 36 + 4 * 2);
	assert_int_equal(rd32(m, f.rsdt + 36), f.fadt);
	assert_int_equal(rd32(m, f.rsdt + 40), f.madt);

	f.dsdt = rd64(m, f.fadt + 140);
	assert_int_equal(rd32(m, f.fadt + 40), f.dsdt);
	check_sdt(m, f.dsdt, "DSDT");
	return f;
}

static void check_fadt(const struct guest_mem *m, uint64_t fadt)
{
	assert_int_equal(rd32(m, fadt + 4), 276);
	assert_int_equal(rd8(m, fadt + 8), 6);    /* major version */
	assert_int_equal(rd8(m, fadt + 131), 3);  /* minor version */
	uint32_t flags = rd32(m, fadt + 112);
	assert_true(flags & (1U << 20)); /* HW_REDUCED_ACPI */
	assert_false(flags & (1U << 10)); /* no RESET_REG */
	assert_int_equal(rd32(m, fadt + 36), 0);  /* no FACS */
	assert_int_equal(rd64(m, fadt + 132), 0);
	assert_int_equal(rd16(m, fadt + 46), 0);  /* no SCI */
	assert_true(rd16(m, fadt + 109) & (1U << 1)); /* i8042 present */

	/* SLEEP_CONTROL_REG and SLEEP_STATUS_REG: byte registers in system
	 * I/O space. */
	const struct {
		uint64_t off;
		uint16_t port;
	} regs[] = { { 244, ACPI_SLEEP_CONTROL_PORT }, { 256, ACPI_SLEEP_STATUS_PORT } };
	for (size_t i = 0; i < 2; i++) {
		uint64_t g = fadt + regs[i].off;
		assert_int_equal(rd8(m, g), 1);     /* system I/O */
		assert_int_equal(rd8(m, g + 1), 8); /* bit width */
		assert_int_equal(rd8(m, g + 2), 0); /* bit offset */
		assert_int_equal(rd8(m, g + 3), 1); /* byte access */
		assert_int_equal(rd64(m, g + 4), regs[i].port);
	}
	assert_true(mem_eq(m, fadt + 268, "LIBMICVM", 8));
}

/* Decode a PkgLength at @p; its value in *@len, returns the bytes it took. */
static size_t pkg_length(const uint8_t *p, size_t *len)
{
	size_t follow = p[0] >> 6;
	if (follow == 0) {
		*len = p[0] & 0x3f;
		return 1;
	}
	size_t v = p[0] & 0x0f;
	for (size_t i = 0; i < follow; i++)
		v |= (size_t)p[1 + i] << (4 + 8 * i);
	*len = v;
	return 1 + follow;
}

static const uint8_t *find_bytes(const uint8_t *hay, size_t n, const void *needle, size_t k)
{
	return memmem(hay, n, needle, k);
}

/* Device(@name) at @d: its body (after the name) in [*body, *end). */
static const uint8_t *device_at(const uint8_t *d, const uint8_t *limit, const char *name,
				const uint8_t **end)
{
	size_t plen;
	assert_true(d + 2 < limit);
	assert_int_equal(d[0], 0x5b);
	assert_int_equal(d[1], 0x82);
	size_t used = pkg_length(d + 2, &plen);
	*end = d + 2 + plen;
	assert_true(*end <= limit);
	assert_memory_equal(d + 2 + used, name, 4);
	return d + 2 + used + 4;
}

/* \_SB.VGEN (what Linux's vmgenid driver binds: _CID "VM_GEN_COUNTER" and
 * an ADDR package pointing at the ID) and \_SB.GED0 (ACPI0013, an edge
 * interrupt, _EVT notifying VGEN with 0x80). Returns the end of GED0. */
static const uint8_t *check_vmgenid(const struct guest_mem *m, const uint8_t *d,
				    const uint8_t *limit)
{
	const uint8_t *end;
	const uint8_t *v = device_at(d, limit, "VGEN", &end);
	size_t n = (size_t)(end - v);
	assert_non_null(find_bytes(v, n, "\x08_HID\x0d" ACPI_VMGENID_HID, 14));
	assert_non_null(find_bytes(v, n, "\x08_CID\x0dVM_GEN_COUNTER", 20));
	/* Name(ADDR, Package(2) { DWord low, Zero }) */
	const uint8_t *a = find_bytes(v, n, "\x08" "ADDR\x12", 6);
	assert_non_null(a);
	assert_int_equal(a[7], 2);
	assert_int_equal(a[8], 0x0c);
	uint32_t lo = (uint32_t)a[9] | (uint32_t)a[10] << 8 | (uint32_t)a[11] << 16 |
		      (uint32_t)a[12] << 24;
	assert_int_equal(lo, ACPI_VMGENID_ADDR);
	assert_int_equal(a[13], 0x00);
	/* The ID: in the reserved area, not covered by a table, random. */
	const uint8_t *id = gm_ptr(m, lo, ACPI_VMGENID_SIZE);
	assert_non_null(id);
	static const uint8_t zero[ACPI_VMGENID_SIZE];
	assert_memory_not_equal(id, zero, sizeof(zero));

	const uint8_t *g = device_at(end, limit, "GED0", &end);
	n = (size_t)(end - g);
	assert_non_null(find_bytes(g, n, "\x08_HID\x0d" "ACPI0013", 14));
	const uint8_t irq[] = { 0x89, 0x06, 0x00, 0x03, 0x01, ACPI_GED_GSI, 0, 0, 0, 0x79 };
	assert_non_null(find_bytes(g, n, irq, sizeof(irq)));
	/* Method(_EVT, 1) { Notify(\_SB.VGEN, 0x80) } */
	const uint8_t evt[] = { '_', 'E', 'V', 'T', 0x01, 0x86, 0x5c, 0x2e, '_', 'S', 'B', '_',
				'V', 'G', 'E', 'N', 0x0a, 0x80 };
	const uint8_t *e = find_bytes(g, n, evt, sizeof(evt));
	assert_non_null(e);
	assert_int_equal(e[-2], 0x14);
	assert_ptr_equal(e + sizeof(evt), end);
	return end;
}

static void check_dsdt(const struct guest_mem *m, uint64_t dsdt)
{
	uint32_t len = rd32(m, dsdt + 4);
	assert_int_equal(rd8(m, dsdt + 8), 2);
	const uint8_t *body = gm_ptr(m, dsdt + 36, len - 36);
	size_t n = len - 36;
	assert_non_null(body);

	/* Name(_S5_, Package(4) {5, 5, 0, 0}) at the root. */
	static const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
				      0x0a, ACPI_SLP_TYP_S5, 0x0a, ACPI_SLP_TYP_S5, 0x00, 0x00 };
	assert_true(n > sizeof(s5));
	assert_memory_equal(body, s5, sizeof(s5));

	/* Scope(\_SB_) follows and its package ends exactly at the end of the
	 * table. */
	const uint8_t *p = body + sizeof(s5);
	assert_int_equal(p[0], 0x10);
	size_t plen, used = pkg_length(p + 1, &plen);
	assert_int_equal(1 + plen, n - sizeof(s5));
	assert_memory_equal(p + 1 + used, "\\_SB_", 5);

	/* Two devices inside, back to back, each Device(){...} package
	 * exactly covering its contents. */
	const uint8_t *d = p + 1 + used + 5, *scope_end = p + 1 + plen;
	const char *names[] = { "COM1", "PS2K" };
	/* EisaId("PNP0501") and EisaId("PNP0303"). */
	const uint8_t hids[][5] = { { 0x0c, 0x41, 0xd0, 0x05, 0x01 },
				    { 0x0c, 0x41, 0xd0, 0x03, 0x03 } };
	/* _CRS bodies: IO(Decode16, ...) and IRQNoFlags(){irq}, end tag. */
	const uint8_t com1_crs[] = { 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,
				     0x22, 0x10, 0x00, 0x79, 0x00 };
	const uint8_t ps2k_crs[] = { 0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x47,
				     0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01, 0x22, 0x02,
				     0x00, 0x79, 0x00 };
	const uint8_t *crs[] = { com1_crs, ps2k_crs };
	const size_t crs_len[] = { sizeof(com1_crs), sizeof(ps2k_crs) };
	for (int i = 0; i < 2; i++) {
		assert_true(d + 2 < scope_end);
		assert_int_equal(d[0], 0x5b);
		assert_int_equal(d[1], 0x82);
		used = pkg_length(d + 2, &plen);
		const uint8_t *dev = d + 2 + used, *dev_end = d + 2 + plen;
		assert_true(dev_end <= scope_end);
		assert_memory_equal(dev, names[i], 4);
		size_t dn = (size_t)(dev_end - dev);
		assert_non_null(find_bytes(dev, dn, "\x08_HID", 5));
		const uint8_t *hid = find_bytes(dev, dn, "\x08_HID", 5) + 5;
		assert_memory_equal(hid, hids[i], 5);
		assert_non_null(find_bytes(dev, dn, "\x08_UID\x00", 6));
		const uint8_t *c = find_bytes(dev, dn, "\x08_CRS", 5);
		assert_non_null(c);
		c += 5;
		assert_int_equal(c[0], 0x11); /* Buffer */
		size_t blen, bused = pkg_length(c + 1, &blen);
		assert_int_equal(c + 1 + blen, dev_end); /* _CRS is the last object */
		/* BufferSize as a ByteConst, then the descriptors. */
		assert_int_equal(c[1 + bused], 0x0a);
		assert_int_equal(c[2 + bused], crs_len[i]);
		assert_int_equal(blen - bused - 2, crs_len[i]);
		assert_memory_equal(c + 3 + bused, crs[i], crs_len[i]);
		d = dev_end;
	}
	d = check_vmgenid(m, d, scope_end);
	assert_ptr_equal(d, scope_end);
}

static void check_madt(const struct guest_mem *m, uint64_t madt, uint32_t ncpus)
{
	uint32_t len = rd32(m, madt + 4);
	assert_int_equal(rd8(m, madt + 8), 5);
	assert_int_equal(rd32(m, madt + 36), 0xfee00000);
	assert_int_equal(rd32(m, madt + 40) & 1, 1); /* PCAT_COMPAT */

	uint32_t lapics = 0, ioapics = 0, nmis = 0;
	uint64_t e = madt + 44, end = madt + len;
	while (e < end) {
		uint8_t type = rd8(m, e), elen = rd8(m, e + 1);
		assert_true(elen >= 2 && e + elen <= end);
		switch (type) {
		case 0: /* processor local APIC */
			assert_int_equal(elen, 8);
			assert_int_equal(rd8(m, e + 2), lapics); /* UID */
			assert_int_equal(rd8(m, e + 3), lapics); /* APIC ID */
			assert_int_equal(rd32(m, e + 4), 1);     /* enabled */
			lapics++;
			break;
		case 1: /* I/O APIC */
			assert_int_equal(elen, 12);
			assert_int_equal(rd8(m, e + 2), ncpus);
			assert_int_equal(rd32(m, e + 4), 0xfec00000);
			assert_int_equal(rd32(m, e + 8), 0);
			ioapics++;
			break;
		case 4: /* local APIC NMI: all processors, LINT1 */
			assert_int_equal(elen, 6);
			assert_int_equal(rd8(m, e + 2), 0xff);
			assert_int_equal(rd16(m, e + 3), 0);
			assert_int_equal(rd8(m, e + 5), 1);
			nmis++;
			break;
		default:
			/* No interrupt source override: identity, as in the MP
			 * table and KVM's default GSI routing. */
			fail_msg("unexpected MADT entry type %u", type);
		}
		e += elen;
	}
	assert_int_equal(e, end);
	assert_int_equal(lapics, ncpus);
	assert_int_equal(ioapics, 1);
	assert_int_equal(nmis, 1);
}

static void acpi_for(void **state, uint32_t ncpus)
{
	struct guest_mem *m = *state;
	char err[256] = "";
	uint64_t rsdp = 0;
	assert_int_equal(acpi_write(m, ncpus, &rsdp, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(rsdp, ACPI_RSDP_ADDR);
	assert_true(rsdp >= 0xe0000 && rsdp < 0x100000);

	struct acpi_found f = find_acpi(m, rsdp);
	check_fadt(m, f.fadt);
	check_dsdt(m, f.dsdt);
	check_madt(m, f.madt, ncpus);
}

static void test_acpi_1(void **state) { acpi_for(state, 1); }
static void test_acpi_2(void **state) { acpi_for(state, 2); }
static void test_acpi_64(void **state) { acpi_for(state, 64); }
static void test_acpi_max(void **state) { acpi_for(state, ACPI_MAX_CPUS); }

static void test_acpi_rewrite(void **state)
{
	acpi_for(state, ACPI_MAX_CPUS);
	acpi_for(state, 1);
}

/* Both sets of tables coexist, in either order, for any vCPU count. */
static void test_tables_coexist(void **state)
{
	struct guest_mem *m = *state;
	char err[256];
	uint64_t rsdp;
	const uint32_t counts[] = { 1, 40, 41, 254 };
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(mptable_write(m, counts[i], err, sizeof(err)), 0);
		assert_int_equal(acpi_write(m, counts[i], &rsdp, err, sizeof(err)), 0);
		check_mptable(m, counts[i]);
		struct acpi_found f = find_acpi(m, rsdp);
		check_madt(m, f.madt, counts[i]);
		assert_int_equal(acpi_write(m, counts[i], &rsdp, err, sizeof(err)), 0);
		assert_int_equal(mptable_write(m, counts[i], err, sizeof(err)), 0);
		check_mptable(m, counts[i]);
		f = find_acpi(m, rsdp);
		check_madt(m, f.madt, counts[i]);
	}
	/* Everything lies in the range the e820 map reserves. */
	assert_true(EBDA_START <= ACPI_TABLES_START && ACPI_TABLES_END <= HIGH_MEMORY_START);
	assert_true(EBDA_START <= MPTABLE_HIGH_ADDR && MPTABLE_HIGH_END <= HIGH_MEMORY_START);
	assert_true(ACPI_TABLES_END <= MPTABLE_HIGH_ADDR);
}

static void test_acpi_errors(void **state)
{
	struct guest_mem *m = *state;
	char err[256] = "";
	uint64_t rsdp = 0x1234;
	assert_int_equal(acpi_write(m, 0, &rsdp, err, sizeof(err)), -EINVAL);
	assert_true(strlen(err) > 0);
	err[0] = 0;
	assert_int_equal(acpi_write(m, ACPI_MAX_CPUS + 1, &rsdp, err, sizeof(err)), -E2BIG);
	assert_true(strlen(err) > 0);
	assert_int_equal(acpi_write(m, UINT32_MAX, &rsdp, err, sizeof(err)), -E2BIG);
	assert_int_equal(rsdp, 0x1234);
	assert_true(all_zero(m));
}

static void test_acpi_small_ram(void **state)
{
	struct guest_mem small;
	char err[256] = "";
	uint64_t rsdp = 0x1234;
	assert_int_equal(arch_ram_init(&small, SMALL_RAM), 0);
	assert_int_equal(acpi_write(&small, 1, &rsdp, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "guest RAM"));
	assert_int_equal(rsdp, 0x1234);
	assert_true(all_zero(&small));
	gm_release(&small);

	/* RAM ending right where the tables would start. */
	assert_int_equal(arch_ram_init(&small, ACPI_TABLES_START), 0);
	assert_int_equal(acpi_write(&small, 254, &rsdp, err, sizeof(err)), -EINVAL);
	assert_true(all_zero(&small));
	gm_release(&small);

	/* A released (unmapped) guest. */
	arch_ram_init(&small, 4096);
	gm_release(&small);
	assert_int_equal(acpi_write(&small, 1, &rsdp, err, sizeof(err)), -EINVAL);
	assert_int_equal(mptable_write(&small, 1, err, sizeof(err)), -EINVAL);
}

static void test_acpi_null_rsdp_out(void **state)
{
	struct guest_mem *m = *state;
	char err[256];
	assert_int_equal(acpi_write(m, 4, NULL, err, sizeof(err)), 0);
	find_acpi(m, ACPI_RSDP_ADDR);
}

static void test_sleep_poweroff(void **state)
{
	(void)state;
	/* What Linux writes for S5: SLP_TYP 5 in bits 2-4, SLP_EN (bit 5). */
	assert_true(acpi_sleep_write_is_poweroff((ACPI_SLP_TYP_S5 << 2) | 0x20));
	assert_true(acpi_sleep_write_is_poweroff(0x34));
	assert_false(acpi_sleep_write_is_poweroff(0x14)); /* S5 without SLP_EN */
	assert_false(acpi_sleep_write_is_poweroff(0x20)); /* SLP_EN, SLP_TYP 0 */
	assert_false(acpi_sleep_write_is_poweroff(0x80)); /* WAK_STS write */
	assert_false(acpi_sleep_write_is_poweroff(0x00));
	assert_false(acpi_sleep_write_is_poweroff(0x3c)); /* SLP_TYP 7 */
	assert_false(acpi_sleep_write_is_poweroff(0x30)); /* SLP_TYP 4 */
	for (unsigned v = 0; v < 256; v++) {
		bool s5 = (v & 0x20) && ((v >> 2) & 7) == 5;
		assert_int_equal(acpi_sleep_write_is_poweroff((uint8_t)v), s5);
	}
	/* The ports are clear of the legacy devices the brief lists. */
	const uint16_t ports[] = { ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT };
	for (size_t i = 0; i < 2; i++) {
		uint16_t p = ports[i];
		assert_false(p >= 0x3f8 && p <= 0x3ff);
		assert_false(p >= 0x60 && p <= 0x64);
		assert_false(p >= 0x40 && p <= 0x43);
		assert_false(p == 0x20 || p == 0x21 || p == 0xa0 || p == 0xa1);
		assert_false(p == 0x70 || p == 0x71 || p == 0x80);
		assert_false(p >= 0xcf8 && p <= 0xcff);
	}
	assert_int_not_equal(ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_mptable_1),
		T(test_mptable_2),
		T(test_mptable_40),
		T(test_mptable_41),
		T(test_mptable_64),
		T(test_mptable_max),
		T(test_mptable_rewrite),
		T(test_mptable_errors),
		cmocka_unit_test(test_mptable_small_ram),
		T(test_acpi_1),
		T(test_acpi_2),
		T(test_acpi_64),
		T(test_acpi_max),
		T(test_acpi_rewrite),
		T(test_acpi_null_rsdp_out),
		T(test_tables_coexist),
		T(test_acpi_errors),
		cmocka_unit_test(test_acpi_small_ram),
		cmocka_unit_test(test_sleep_poweroff),
	};
	return cmocka_run_group_tests_name("firmware", tests, NULL, NULL);
}
