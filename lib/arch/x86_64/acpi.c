/* ACPI tables (ACPI 6.3 chapter 5) and the hand-assembled DSDT (chapter 20,
 * AML; chapter 6.4, resource descriptors). See acpi.h for the design. */
#include "arch/x86_64/acpi.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#include "memory.h"
#include "byteorder.h"
#include "errbuf.h"

/* ------------------------------------------------------------ constants */

#define OEM_ID "MICRVM"          /* 6 bytes */
#define OEM_TABLE_ID "MICROVM "  /* 8 bytes */
#define OEM_REVISION 1
#define CREATOR_ID "LMVM"        /* 4 bytes */
#define CREATOR_REVISION 1
#define HYPERVISOR_ID "LIBMICVM" /* 8 bytes, FADT Hypervisor Vendor Identity */

/* RSDP (5.2.5.3). */
#define RSDP_SIZE 36
#define RSDP_CHECKSUM 8
#define RSDP_OEM_ID 9
#define RSDP_REVISION 15
#define RSDP_RSDT_ADDR 16
#define RSDP_LENGTH 20
#define RSDP_XSDT_ADDR 24
#define RSDP_EXT_CHECKSUM 32
#define RSDP_V1_SIZE 20 /* the part the first checksum covers */

/* System description table header (5.2.6). */
#define SDT_HEADER_SIZE 36
#define SDT_LENGTH 4
#define SDT_REVISION 8
#define SDT_CHECKSUM 9
#define SDT_OEM_ID 10
#define SDT_OEM_TABLE_ID 16
#define SDT_OEM_REVISION 24
#define SDT_CREATOR_ID 28
#define SDT_CREATOR_REVISION 32

/* FADT (5.2.9), revision 6 = 276 bytes; minor version 3 = ACPI 6.3. */
#define FADT_SIZE 276
#define FADT_REVISION 6
#define FADT_MINOR_REVISION 3
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_PM_PROFILE 45
#define FADT_SCI_INT 46
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_MINOR_VERSION 131
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_SLEEP_CONTROL_REG 244
#define FADT_SLEEP_STATUS_REG 256
#define FADT_HYPERVISOR_ID 268

/* IA-PC boot architecture flags (5.2.9.3). */
#define IAPC_8042 (1U << 1)
#define IAPC_VGA_NOT_PRESENT (1U << 2)

/* Fixed feature flags (5.2.9, table 5.10). */
#define FADT_F_WBINVD (1U << 0)
#define FADT_F_PWR_BUTTON (1U << 4) /* no fixed-feature power button */
#define FADT_F_SLP_BUTTON (1U << 5) /* no fixed-feature sleep button */
#define FADT_F_HW_REDUCED_ACPI (1U << 20)

/* Generic address structure (5.2.3.2). */
#define GAS_SIZE 12
#define GAS_SPACE_SYSTEM_IO 1
#define GAS_ACCESS_BYTE 1

/* MADT (5.2.12), revision 5 = ACPI 6.3. */
#define MADT_REVISION 5
#define MADT_LAPIC_ADDR 36
#define MADT_FLAGS 40
#define MADT_ENTRIES 44
#define MADT_PCAT_COMPAT (1U << 0)
#define MADT_LOCAL_APIC 0
#define MADT_LOCAL_APIC_SIZE 8
#define MADT_IO_APIC 1
#define MADT_IO_APIC_SIZE 12
#define MADT_LAPIC_NMI 4
#define MADT_LAPIC_NMI_SIZE 6
#define MADT_LAPIC_ENABLED (1U << 0)
#define MADT_ALL_PROCESSORS 0xff
#define MPS_INTI_CONFORMING 0x0000

#define XSDT_REVISION 1
#define RSDT_REVISION 1
#define DSDT_REVISION 2 /* 64-bit AML integers */
#define RSDP_REVISION_2 2

/* ------------------------------------------------------------ helpers */


static uint64_t align16(uint64_t v) { return (v + 15) & ~15ULL; }

/* The byte that makes the bytes of [p, p + len) sum to 0 mod 256. */
static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0x100 - sum);
}

static void sdt_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t + SDT_LENGTH, len);
	t[SDT_REVISION] = rev;
	memcpy(t + SDT_OEM_ID, OEM_ID, 6);
	memcpy(t + SDT_OEM_TABLE_ID, OEM_TABLE_ID, 8);
	put32(t + SDT_OEM_REVISION, OEM_REVISION);
	memcpy(t + SDT_CREATOR_ID, CREATOR_ID, 4);
	put32(t + SDT_CREATOR_REVISION, CREATOR_REVISION);
}

/* Call last, once the whole table is written. */
static void sdt_checksum(uint8_t *t, uint32_t len)
{
	t[SDT_CHECKSUM] = 0;
	t[SDT_CHECKSUM] = checksum(t, len);
}

/* A byte-wide system I/O register. */
static void put_gas_io8(uint8_t *g, uint16_t port)
{
	g[0] = GAS_SPACE_SYSTEM_IO;
	g[1] = 8; /* register bit width */
	g[2] = 0; /* bit offset */
	g[3] = GAS_ACCESS_BYTE;
	put64(g + 4, port);
}

/* ------------------------------------------------------------ AML */

/* AML opcodes and prefixes (ACPI 6.3, 20.2). */
#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE 0x10
#define AML_BUFFER 0x11
#define AML_PACKAGE 0x12
#define AML_EXT_PREFIX 0x5b
#define AML_DEVICE 0x82 /* after AML_EXT_PREFIX */
#define AML_ROOT_CHAR 0x5c

/* Small resource descriptors (6.4.2). */
#define RES_IRQ_NOFLAGS 0x22 /* IRQ descriptor, 2 bytes: mask only */
#define RES_IO 0x47          /* I/O port descriptor, 7 bytes */
#define RES_IO_DECODE16 0x01
#define RES_END_TAG 0x79

#define AML_MAX 4096

struct aml {
	uint8_t b[AML_MAX];
	size_t len;
	bool overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > AML_MAX - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->b + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t v) { aml_bytes(a, &v, 1); }

static void aml_word(struct aml *a, uint16_t v)
{
	uint8_t b[2];
	put16(b, v);
	aml_bytes(a, b, 2);
}

static void aml_dword(struct aml *a, uint32_t v)
{
	uint8_t b[4];
	put32(b, v);
	aml_bytes(a, b, 4);
}

/* NameSeg: exactly four characters. */
static void aml_nameseg(struct aml *a, const char *seg) { aml_bytes(a, seg, 4); }

/* The shortest ComputationalData encoding of @v. */
static void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, AML_ZERO);
	} else if (v == 1) {
		aml_byte(a, AML_ONE);
	} else if (v <= 0xff) {
		aml_byte(a, AML_BYTE_PREFIX);
		aml_byte(a, (uint8_t)v);
	} else if (v <= 0xffff) {
		aml_byte(a, AML_WORD_PREFIX);
		aml_word(a, (uint16_t)v);
	} else if (v <= 0xffffffff) {
		aml_byte(a, AML_DWORD_PREFIX);
		aml_dword(a, (uint32_t)v);
	} else {
		uint8_t b[8];
		put64(b, v);
		aml_byte(a, AML_QWORD_PREFIX);
		aml_bytes(a, b, 8);
	}
}

/* EisaId("PNPxxxx"): three letters of 5 bits each (A = 1) and four hex
 * digits, stored big-endian, emitted as a DWordConst. */
static void aml_eisaid(struct aml *a, const char *id)
{
	static const char hex[] = "0123456789ABCDEF";
	uint16_t vendor = (uint16_t)(((id[0] - '@') & 0x1f) << 10 | ((id[1] - '@') & 0x1f) << 5 |
				     ((id[2] - '@') & 0x1f));
	uint16_t product = 0;
	for (int i = 3; i < 7; i++)
		product = (uint16_t)(product << 4 | (uint16_t)(strchr(hex, id[i]) - hex));
	aml_byte(a, AML_DWORD_PREFIX);
	uint8_t b[4] = { (uint8_t)(vendor >> 8), (uint8_t)vendor, (uint8_t)(product >> 8),
			 (uint8_t)product };
	aml_bytes(a, b, 4);
}

/*
 * PkgLength (20.2.4) of what follows, up to the matching aml_pkg_end().
 * Two bytes are reserved; if the package turns out short enough for the
 * one-byte form, the body moves back by one.
 */
static size_t aml_pkg_begin(struct aml *a)
{
	size_t at = a->len;
	aml_word(a, 0);
	return at;
}

static void aml_pkg_end(struct aml *a, size_t at)
{
	if (a->overflow)
		return;
	size_t body = a->len - at - 2;
	if (body + 1 <= 0x3f) {
		memmove(a->b + at + 1, a->b + at + 2, body);
		a->b[at] = (uint8_t)(body + 1);
		a->len--;
	} else if (body + 2 <= 0xfff) {
		size_t total = body + 2;
		a->b[at] = (uint8_t)(0x40 | (total & 0xf)); /* 1 follow byte */
		a->b[at + 1] = (uint8_t)(total >> 4);
	} else {
		a->overflow = true;
	}
}

/* Name(seg, ...): emit the NameOp and name; the caller emits the object. */
static void aml_name(struct aml *a, const char *seg)
{
	aml_byte(a, AML_NAME);
	aml_nameseg(a, seg);
}

/* Resource template byte list -> Buffer (with the end tag appended). */
static void aml_resource_buffer(struct aml *a, const uint8_t *res, size_t n)
{
	aml_byte(a, AML_BUFFER);
	size_t pkg = aml_pkg_begin(a);
	aml_integer(a, n + 2);
	aml_bytes(a, res, n);
	aml_byte(a, RES_END_TAG);
	aml_byte(a, 0); /* checksum 0: "treat as valid" */
	aml_pkg_end(a, pkg);
}

static size_t res_io(uint8_t *r, uint16_t port, uint8_t len)
{
	r[0] = RES_IO;
	r[1] = RES_IO_DECODE16;
	put16(r + 2, port); /* range minimum */
	put16(r + 4, port); /* range maximum */
	r[6] = 1;           /* alignment */
	r[7] = len;
	return 8;
}

static size_t res_irq(uint8_t *r, unsigned irq)
{
	/* No flags byte: edge triggered, active high, exclusive. */
	r[0] = RES_IRQ_NOFLAGS;
	put16(r + 1, (uint16_t)(1U << irq));
	return 3;
}

/* Device(name) { _HID EisaId(hid), _UID 0, _CRS res } */
static void aml_legacy_device(struct aml *a, const char *name, const char *hid,
			      const uint8_t *res, size_t n)
{
	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_DEVICE);
	size_t pkg = aml_pkg_begin(a);
	aml_nameseg(a, name);
	aml_name(a, "_HID");
	aml_eisaid(a, hid);
	aml_name(a, "_UID");
	aml_integer(a, 0);
	aml_name(a, "_CRS");
	aml_resource_buffer(a, res, n);
	aml_pkg_end(a, pkg);
}

#define AML_STRING_PREFIX 0x0d
#define RES_MEMORY32_FIXED 0x86 /* large item, 9 data bytes */
#define RES_EXT_IRQ 0x89        /* large item: extended interrupt descriptor */
#define EXT_IRQ_CONSUMER 0x01
#define EXT_IRQ_EDGE 0x02

/* Device(VRnn) { _HID "LNRO0005", _UID n, _CRS { mem, irq } } */
static void aml_virtio_device(struct aml *a, uint32_t n, const struct acpi_mmio_device *d)
{
	char name[5];
	snprintf(name, sizeof(name), "VR%02X", n & 0xff);
	uint8_t res[32];
	size_t r = 0;
	res[r++] = RES_MEMORY32_FIXED;
	put16(res + r, 9);
	r += 2;
	res[r++] = 0x01; /* read/write */
	put32(res + r, (uint32_t)d->base);
	r += 4;
	put32(res + r, d->size);
	r += 4;
	res[r++] = RES_EXT_IRQ;
	put16(res + r, 6);
	r += 2;
	res[r++] = EXT_IRQ_CONSUMER | EXT_IRQ_EDGE; /* active high, exclusive */
	res[r++] = 1;                               /* one interrupt */
	put32(res + r, d->gsi);
	r += 4;

	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_DEVICE);
	size_t pkg = aml_pkg_begin(a);
	aml_nameseg(a, name);
	aml_name(a, "_HID");
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, "LNRO0005", 9); /* with its NUL */
	aml_name(a, "_UID");
	aml_integer(a, n);
	aml_name(a, "_CRS");
	aml_resource_buffer(a, res, r);
	aml_pkg_end(a, pkg);
}

#define AML_METHOD 0x14
#define AML_NOTIFY 0x86
#define AML_DUAL_NAME_PREFIX 0x2e
#define ACPI_NOTIFY_DEVICE_SPECIFIC 0x80

static void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1); /* with its NUL */
}

/* Device(VGEN) and Device(GED0), see acpi.h. */
static void aml_vmgenid(struct aml *a)
{
	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_DEVICE);
	size_t dev = aml_pkg_begin(a);
	aml_nameseg(a, "VGEN");
	aml_name(a, "_HID");
	aml_string(a, ACPI_VMGENID_HID);
	aml_name(a, "_CID");
	aml_string(a, "VM_GEN_COUNTER");
	aml_name(a, "_DDN");
	aml_string(a, "VM_Gen_Counter");
	aml_name(a, "ADDR");
	aml_byte(a, AML_PACKAGE);
	size_t pkg = aml_pkg_begin(a);
	aml_byte(a, 2); /* NumElements */
	aml_integer(a, ACPI_VMGENID_ADDR & 0xffffffffULL);
	aml_integer(a, ACPI_VMGENID_ADDR >> 32);
	aml_pkg_end(a, pkg);
	aml_pkg_end(a, dev);

	uint8_t res[9] = { RES_EXT_IRQ, 6, 0, EXT_IRQ_CONSUMER | EXT_IRQ_EDGE, 1 };
	put32(res + 5, ACPI_GED_GSI);
	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_DEVICE);
	dev = aml_pkg_begin(a);
	aml_nameseg(a, "GED0");
	aml_name(a, "_HID");
	aml_string(a, "ACPI0013");
	aml_name(a, "_CRS");
	aml_resource_buffer(a, res, sizeof(res));
	/* Method(_EVT, 1) { Notify(\_SB.VGEN, 0x80) } */
	aml_byte(a, AML_METHOD);
	size_t m = aml_pkg_begin(a);
	aml_nameseg(a, "_EVT");
	aml_byte(a, 1); /* MethodFlags: one argument, not serialized */
	aml_byte(a, AML_NOTIFY);
	aml_byte(a, AML_ROOT_CHAR);
	aml_byte(a, AML_DUAL_NAME_PREFIX);
	aml_nameseg(a, "_SB_");
	aml_nameseg(a, "VGEN");
	aml_integer(a, ACPI_NOTIFY_DEVICE_SPECIFIC);
	aml_pkg_end(a, m);
	aml_pkg_end(a, dev);
}

/* The DSDT's definition block (everything after the table header). */
static void build_dsdt_body(struct aml *a, const struct acpi_mmio_device *devs, uint32_t ndevs)
{
	/* Name(_S5_, Package(4) {S5, S5, 0, 0}): SLP_TYPa, SLP_TYPb, reserved. */
	aml_name(a, "_S5_");
	aml_byte(a, AML_PACKAGE);
	size_t pkg = aml_pkg_begin(a);
	aml_byte(a, 4); /* NumElements */
	aml_integer(a, ACPI_SLP_TYP_S5);
	aml_integer(a, ACPI_SLP_TYP_S5);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_pkg_end(a, pkg);

	/* Scope(\_SB_) { COM1, PS2K } */
	aml_byte(a, AML_SCOPE);
	size_t scope = aml_pkg_begin(a);
	aml_byte(a, AML_ROOT_CHAR);
	aml_nameseg(a, "_SB_");

	uint8_t res[32];
	size_t n = res_io(res, 0x3f8, 8);
	n += res_irq(res + n, 4);
	aml_legacy_device(a, "COM1", "PNP0501", res, n);

	n = res_io(res, 0x60, 1);
	n += res_io(res + n, 0x64, 1);
	n += res_irq(res + n, 1);
	aml_legacy_device(a, "PS2K", "PNP0303", res, n);

	for (uint32_t i = 0; i < ndevs; i++)
		aml_virtio_device(a, i, &devs[i]);
	aml_vmgenid(a);

	aml_pkg_end(a, scope);
}

/* ------------------------------------------------------------ tables */

void acpi_vmgenid_fill(uint8_t id[ACPI_VMGENID_SIZE])
{
	size_t got = 0;
	while (got < ACPI_VMGENID_SIZE) {
		ssize_t n = getrandom(id + got, ACPI_VMGENID_SIZE - got, 0);
		if (n > 0)
			got += (size_t)n;
		else if (n < 0 && errno != EINTR)
			break;
	}
	/* No entropy source at all: still a different ID each time. */
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	uint64_t x = (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
	for (size_t i = got; i < ACPI_VMGENID_SIZE; i++, x = x * 6364136223846793005ULL + 1)
		id[i] ^= (uint8_t)(x >> 56);
}

bool acpi_sleep_write_is_poweroff(uint8_t value)
{
	return (value & ACPI_SLP_EN) &&
	       ((value & ACPI_SLP_TYP_MASK) >> ACPI_SLP_TYP_SHIFT) == ACPI_SLP_TYP_S5;
}

static void write_fadt(uint8_t *t, uint64_t dsdt_addr)
{
	sdt_header(t, "FACP", FADT_SIZE, FADT_REVISION);
	/* No FACS: FIRMWARE_CTRL and X_FIRMWARE_CTRL stay 0, which a
	 * hardware-reduced platform may do. */
	put32(t + FADT_FIRMWARE_CTRL, 0);
	put32(t + FADT_DSDT, (uint32_t)dsdt_addr);
	t[FADT_PM_PROFILE] = 0; /* unspecified */
	put16(t + FADT_SCI_INT, 0);
	put16(t + FADT_IAPC_BOOT_ARCH, IAPC_8042 | IAPC_VGA_NOT_PRESENT);
	put32(t + FADT_FLAGS,
	      FADT_F_WBINVD | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON | FADT_F_HW_REDUCED_ACPI);
	t[FADT_MINOR_VERSION] = FADT_MINOR_REVISION;
	put64(t + FADT_X_FIRMWARE_CTRL, 0);
	put64(t + FADT_X_DSDT, dsdt_addr);
	put_gas_io8(t + FADT_SLEEP_CONTROL_REG, ACPI_SLEEP_CONTROL_PORT);
	put_gas_io8(t + FADT_SLEEP_STATUS_REG, ACPI_SLEEP_STATUS_PORT);
	memcpy(t + FADT_HYPERVISOR_ID, HYPERVISOR_ID, 8);
	sdt_checksum(t, FADT_SIZE);
}

static uint32_t madt_size(uint32_t ncpus)
{
	return MADT_ENTRIES + ncpus * MADT_LOCAL_APIC_SIZE + MADT_IO_APIC_SIZE +
	       MADT_LAPIC_NMI_SIZE;
}

static void write_madt(uint8_t *t, uint32_t ncpus)
{
	uint32_t len = madt_size(ncpus);
	sdt_header(t, "APIC", len, MADT_REVISION);
	put32(t + MADT_LAPIC_ADDR, ACPI_LAPIC_ADDR);
	put32(t + MADT_FLAGS, MADT_PCAT_COMPAT);
	uint8_t *e = t + MADT_ENTRIES;

	for (uint32_t i = 0; i < ncpus; i++) {
		e[0] = MADT_LOCAL_APIC;
		e[1] = MADT_LOCAL_APIC_SIZE;
		e[2] = (uint8_t)i; /* ACPI processor UID */
		e[3] = (uint8_t)i; /* APIC ID */
		put32(e + 4, MADT_LAPIC_ENABLED);
		e += MADT_LOCAL_APIC_SIZE;
	}

	e[0] = MADT_IO_APIC;
	e[1] = MADT_IO_APIC_SIZE;
	e[2] = (uint8_t)ncpus; /* I/O APIC ID, after the local APIC IDs */
	e[3] = 0;
	put32(e + 4, ACPI_IOAPIC_ADDR);
	put32(e + 8, 0); /* GSI base */
	e += MADT_IO_APIC_SIZE;

	/* No interrupt source overrides: ISA IRQ i is GSI i (see acpi.h). */

	e[0] = MADT_LAPIC_NMI;
	e[1] = MADT_LAPIC_NMI_SIZE;
	e[2] = MADT_ALL_PROCESSORS;
	put16(e + 3, MPS_INTI_CONFORMING);
	e[5] = 1; /* LINT1 */

	sdt_checksum(t, len);
}

int acpi_write(struct guest_mem *mem, uint32_t ncpus, uint64_t *rsdp_addr, char *err,
	       size_t errlen)
{
	return acpi_write_devices(mem, ncpus, NULL, 0, rsdp_addr, err, errlen);
}

/* XSDT and RSDT (for OSes, or acpi=rsdt, that ignore the XSDT; everything
 * is below 4 GiB) listing the FADT and MADT, and the RSDP pointing at both;
 * @x, @r and @p are where the three go, @xsdt.. their guest addresses. */
static void write_root_tables(uint8_t *x, uint8_t *r, uint8_t *p, uint64_t xsdt, uint64_t rsdt,
			      uint64_t fadt, uint64_t madt)
{
	const uint32_t xsdt_len = SDT_HEADER_SIZE + 8 * 2, rsdt_len = SDT_HEADER_SIZE + 4 * 2;
	sdt_header(x, "XSDT", xsdt_len, XSDT_REVISION);
	put64(x + SDT_HEADER_SIZE, fadt);
	put64(x + SDT_HEADER_SIZE + 8, madt);
	sdt_checksum(x, xsdt_len);

	sdt_header(r, "RSDT", rsdt_len, RSDT_REVISION);
	put32(r + SDT_HEADER_SIZE, (uint32_t)fadt);
	put32(r + SDT_HEADER_SIZE + 4, (uint32_t)madt);
	sdt_checksum(r, rsdt_len);

	memcpy(p, "RSD PTR ", 8);
	memcpy(p + RSDP_OEM_ID, OEM_ID, 6);
	p[RSDP_REVISION] = RSDP_REVISION_2;
	put32(p + RSDP_RSDT_ADDR, (uint32_t)rsdt);
	put32(p + RSDP_LENGTH, RSDP_SIZE);
	put64(p + RSDP_XSDT_ADDR, xsdt);
	p[RSDP_CHECKSUM] = checksum(p, RSDP_V1_SIZE);
	p[RSDP_EXT_CHECKSUM] = checksum(p, RSDP_SIZE);
}

int acpi_write_devices(struct guest_mem *mem, uint32_t ncpus,
		       const struct acpi_mmio_device *devs, uint32_t ndevs, uint64_t *rsdp_addr,
		       char *err, size_t errlen)
{
	if (ndevs > ACPI_MAX_MMIO_DEVICES)
		return errbuf_fail(err, errlen, -E2BIG, "ACPI: %u MMIO devices, at most %d", ndevs,
			    ACPI_MAX_MMIO_DEVICES);
	if (ncpus == 0)
		return errbuf_fail(err, errlen, -EINVAL, "ACPI: no vCPUs");
	if (ncpus > ACPI_MAX_CPUS)
		return errbuf_fail(err, errlen, -E2BIG, "ACPI: %u vCPUs, at most %d fit (8-bit APIC IDs)",
			    ncpus, ACPI_MAX_CPUS);

	struct aml dsdt_body = { .len = 0 };
	build_dsdt_body(&dsdt_body, devs, ndevs);
	if (dsdt_body.overflow)
		return errbuf_fail(err, errlen, -ENOSPC, "ACPI: DSDT exceeds %d bytes of AML", AML_MAX);

	/* Layout, each table 16-byte aligned. */
	enum { XSDT_ENTRIES = 2 }; /* FADT, MADT */
	const uint64_t base = ACPI_TABLES_START;
	const uint64_t rsdp = ACPI_RSDP_ADDR;
	const uint64_t xsdt = align16(rsdp + RSDP_SIZE);
	const uint32_t xsdt_len = SDT_HEADER_SIZE + 8 * XSDT_ENTRIES;
	const uint64_t rsdt = align16(xsdt + xsdt_len);
	const uint32_t rsdt_len = SDT_HEADER_SIZE + 4 * XSDT_ENTRIES;
	const uint64_t fadt = align16(rsdt + rsdt_len);
	const uint64_t dsdt = align16(fadt + FADT_SIZE);
	const uint32_t dsdt_len = (uint32_t)(SDT_HEADER_SIZE + dsdt_body.len);
	const uint64_t madt = align16(dsdt + dsdt_len);
	const uint32_t madt_len = madt_size(ncpus);
	const uint64_t end = madt + madt_len;

	if (end > ACPI_VMGENID_ADDR)
		return errbuf_fail(err, errlen, -E2BIG,
			    "ACPI: tables for %u vCPUs need %llu bytes, only %llu are reserved",
			    ncpus, (unsigned long long)(end - base),
			    (unsigned long long)(ACPI_VMGENID_ADDR - base));
	uint8_t *area = gm_ptr(mem, base, end - base);
	uint8_t *genid = gm_ptr(mem, ACPI_VMGENID_ADDR, ACPI_VMGENID_SIZE);
	if (!area || !genid)
		return errbuf_fail(err, errlen, -EINVAL,
			    "ACPI: guest RAM does not cover the tables at [0x%llx, 0x%llx)",
			    (unsigned long long)base, (unsigned long long)end);
	memset(area, 0, end - base);
#define AT(gpa) (area + ((gpa) - base))

	write_madt(AT(madt), ncpus);

	uint8_t *t = AT(dsdt);
	sdt_header(t, "DSDT", dsdt_len, DSDT_REVISION);
	memcpy(t + SDT_HEADER_SIZE, dsdt_body.b, dsdt_body.len);
	sdt_checksum(t, dsdt_len);

	write_fadt(AT(fadt), dsdt);

	write_root_tables(AT(xsdt), AT(rsdt), AT(rsdp), xsdt, rsdt, fadt, madt);
#undef AT
	acpi_vmgenid_fill(genid);

	if (rsdp_addr)
		*rsdp_addr = rsdp;
	return 0;
}
