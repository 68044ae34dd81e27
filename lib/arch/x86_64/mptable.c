/* MP floating pointer + MP configuration table (MultiProcessor
 * Specification 1.4, chapter 4). See mptable.h for placement and routing. */
#include "arch/x86_64/mptable.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arch/x86_64/layout.h"
#include "memory.h"
#include "byteorder.h"
#include "errbuf.h"

/* Floating pointer structure (MPS 4.1). */
#define MPF_SIGNATURE "_MP_"
#define MPF_PHYSPTR 4
#define MPF_LENGTH 8   /* in 16-byte paragraphs */
#define MPF_SPEC_REV 9
#define MPF_CHECKSUM 10
#define MPF_FEATURE1 11 /* 0: a configuration table is present */
#define MPF_FEATURE2 12 /* bit 7 IMCRP clear: virtual wire mode */

/* Configuration table header (MPS 4.2). */
#define MPC_SIGNATURE "PCMP"
#define MPC_LENGTH 4
#define MPC_SPEC_REV 6
#define MPC_CHECKSUM 7
#define MPC_OEM_ID 8      /* 8 bytes */
#define MPC_PRODUCT_ID 16 /* 12 bytes */
#define MPC_ENTRY_COUNT 34
#define MPC_LAPIC_ADDR 36

#define MP_SPEC_REV_1_4 4

/* Entry types (MPS 4.3). */
#define MP_PROCESSOR 0
#define MP_BUS 1
#define MP_IOAPIC 2
#define MP_IOINTR 3
#define MP_LINTR 4

#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP 0x02
#define MP_IOAPIC_ENABLED 0x01

/* Interrupt types of I/O and local interrupt assignment entries. */
#define MP_INT_INT 0
#define MP_INT_NMI 1
#define MP_INT_EXTINT 3
#define MP_IRQ_CONFORMING 0x0000 /* polarity and trigger as the bus says */

#define MP_ISA_BUS_ID 0
#define MP_ALL_LAPICS 0xff

/* CPU signature (family 6) and feature flags (FPU, on-chip APIC) of the
 * processor entries; Linux reads only the APIC ID and flags. */
#define MP_CPU_SIGNATURE 0x600
#define MP_CPU_FEATURES ((1U << 0) | (1U << 9))


/* The byte that makes the bytes of [p, p + len) sum to 0 mod 256. */
static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0x100 - sum);
}

/* An I/O or local interrupt assignment entry. */
static uint8_t *put_intr(uint8_t *e, uint8_t type, uint8_t irqtype, uint8_t bus, uint8_t bus_irq,
			 uint8_t dst, uint8_t dst_pin)
{
	e[0] = type;
	e[1] = irqtype;
	put16(e + 2, MP_IRQ_CONFORMING);
	e[4] = bus;
	e[5] = bus_irq;
	e[6] = dst;
	e[7] = dst_pin;
	return e + MPC_ENTRY_SIZE;
}

/* Where the configuration table for @ncpus goes: just after the floating
 * pointer in the EBDA if it fits there, else at MPTABLE_HIGH_ADDR. */
static int mptable_place(uint32_t ncpus, uint64_t *addr, uint64_t *size, char *err, size_t errlen)
{
	if (ncpus == 0)
		return errbuf_fail(err, errlen, -EINVAL, "MP table: no vCPUs");
	if (ncpus > MPTABLE_MAX_CPUS)
		return errbuf_fail(err, errlen, -E2BIG, "MP table: %u vCPUs, at most %d fit (8-bit APIC IDs)",
			    ncpus, MPTABLE_MAX_CPUS);

	*size = MPTABLE_CONFIG_SIZE(ncpus);
	*addr = EBDA_START + MPF_SIZE;
	if (*addr + *size > MPTABLE_EBDA_END)
		*addr = MPTABLE_HIGH_ADDR;
	if (*addr + *size > (*addr == MPTABLE_HIGH_ADDR ? MPTABLE_HIGH_END : MPTABLE_EBDA_END))
		return errbuf_fail(err, errlen, -E2BIG, "MP table: %llu bytes for %u vCPUs do not fit",
			    (unsigned long long)*size, ncpus);
	return 0;
}

/* The entries of the configuration table from @e on: one processor per vCPU,
 * the ISA bus, the I/O APIC and the interrupt routing. Returns their count. */
static uint16_t mptable_put_entries(uint8_t *e, uint32_t ncpus)
{
	uint16_t count = 0;

	for (uint32_t i = 0; i < ncpus; i++, count++) {
		e[0] = MP_PROCESSOR;
		e[1] = (uint8_t)i; /* local APIC ID == vCPU index */
		e[2] = MPTABLE_APIC_VERSION;
		e[3] = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0);
		put32(e + 4, MP_CPU_SIGNATURE);
		put32(e + 8, MP_CPU_FEATURES);
		e += MPC_CPU_SIZE;
	}

	e[0] = MP_BUS;
	e[1] = MP_ISA_BUS_ID;
	memcpy(e + 2, "ISA   ", 6);
	e += MPC_ENTRY_SIZE;
	count++;

	uint8_t ioapic_id = (uint8_t)ncpus;
	e[0] = MP_IOAPIC;
	e[1] = ioapic_id;
	e[2] = MPTABLE_IOAPIC_VERSION;
	e[3] = MP_IOAPIC_ENABLED;
	put32(e + 4, MPTABLE_IOAPIC_ADDR);
	e += MPC_ENTRY_SIZE;
	count++;

	/* ISA IRQ i -> IOAPIC pin i, as KVM's default GSI routing does. */
	for (uint8_t irq = 0; irq < MPTABLE_ISA_IRQS; irq++, count++)
		e = put_intr(e, MP_IOINTR, MP_INT_INT, MP_ISA_BUS_ID, irq, ioapic_id, irq);

	/* Virtual wire: the 8259 on LINT0, NMI on LINT1, of every CPU. */
	e = put_intr(e, MP_LINTR, MP_INT_EXTINT, MP_ISA_BUS_ID, 0, MP_ALL_LAPICS, 0);
	e = put_intr(e, MP_LINTR, MP_INT_NMI, MP_ISA_BUS_ID, 0, MP_ALL_LAPICS, 1);
	count += 2;
	return count;
}

/* The configuration table (header and entries) in the zeroed @mpc. */
static void mptable_put_config(uint8_t *mpc, uint64_t size, uint32_t ncpus)
{
	memcpy(mpc, MPC_SIGNATURE, 4);
	put16(mpc + MPC_LENGTH, (uint16_t)size);
	mpc[MPC_SPEC_REV] = MP_SPEC_REV_1_4;
	memcpy(mpc + MPC_OEM_ID, "MICRVM  ", 8);
	memcpy(mpc + MPC_PRODUCT_ID, "MICROVM     ", 12);
	put32(mpc + MPC_LAPIC_ADDR, MPTABLE_LAPIC_ADDR);
	put16(mpc + MPC_ENTRY_COUNT, mptable_put_entries(mpc + MPC_HEADER_SIZE, ncpus));
	mpc[MPC_CHECKSUM] = checksum(mpc, size);
}

/* The floating pointer at the start of the zeroed EBDA @ebda, pointing at the
 * configuration table at guest address @addr. */
static void mptable_put_floating_pointer(uint8_t *ebda, uint64_t addr)
{
	memcpy(ebda, MPF_SIGNATURE, 4);
	put32(ebda + MPF_PHYSPTR, (uint32_t)addr);
	ebda[MPF_LENGTH] = 1;
	ebda[MPF_SPEC_REV] = MP_SPEC_REV_1_4;
	ebda[MPF_FEATURE1] = 0;
	ebda[MPF_FEATURE2] = 0;
	ebda[MPF_CHECKSUM] = checksum(ebda, MPF_SIZE);
}

int mptable_write(struct guest_mem *mem, uint32_t ncpus, char *err, size_t errlen)
{
	uint64_t addr = 0, size = 0;
	int r = mptable_place(ncpus, &addr, &size, err, errlen);
	if (r < 0)
		return r;

	/* Check every range before writing anything. */
	uint8_t *ebda = gm_ptr(mem, EBDA_START, MPTABLE_EBDA_END - EBDA_START);
	uint8_t *mpc = gm_ptr(mem, addr, size);
	if (!ebda || !mpc)
		return errbuf_fail(err, errlen, -EINVAL,
			    "MP table: guest RAM does not cover [0x%llx, 0x%llx)",
			    (unsigned long long)(ebda ? addr : EBDA_START),
			    (unsigned long long)(ebda ? addr + size : MPTABLE_EBDA_END));

	/* The EBDA KiB is all ours: no stale signature may survive. */
	memset(ebda, 0, MPTABLE_EBDA_END - EBDA_START);
	memset(mpc, 0, size);
	mptable_put_config(mpc, size, ncpus);
	mptable_put_floating_pointer(ebda, addr);
	return 0;
}
