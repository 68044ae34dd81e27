#include "arch/x86_64/cpu.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "arch/x86_64/layout.h"
#include "errbuf.h"

int x86_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		int e = errno;
		free(c);
		if (e != E2BIG)
			return -e;
	}
	return -E2BIG;
}

#define CPUID_HYPERVISOR (1u << 31)
#define CPUID_TSC_DEADLINE (1u << 24) /* leaf 1 ECX; KVM_CAP_TSC_DEADLINE_TIMER */

static void fix_cpuid(struct kvm_cpuid2 *c, uint32_t index, uint32_t count, bool tsc_deadline)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* EBX[31:24] initial APIC ID, [23:16] logical CPUs per package. */
			e->ebx = (e->ebx & 0x0000ffffu) | (index << 24) | ((count & 0xff) << 16);
			e->ecx |= CPUID_HYPERVISOR;
			if (tsc_deadline)
				e->ecx |= CPUID_TSC_DEADLINE;
			if (count > 1)
				e->edx |= 1u << 28; /* HTT: multiple logical CPUs */
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC ID of this CPU in EDX, for every sub-leaf. */
			e->edx = index;
			break;
		default:
			break;
		}
	}
}

/* Local APIC: LINT0 as ExtINT (the PIC's virtual wire) and LINT1 as NMI,
 * as firmware leaves them. */
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_MODE_EXTINT 0x700
#define APIC_MODE_NMI 0x400

static int setup_lapic(int fd)
{
	struct kvm_lapic_state la;
	if (ioctl(fd, KVM_GET_LAPIC, &la) < 0)
		return -errno;
	uint32_t v;
	memcpy(&v, &la.regs[APIC_LVT_LINT0], 4);
	v = (v & ~0x700u) | APIC_MODE_EXTINT;
	memcpy(&la.regs[APIC_LVT_LINT0], &v, 4);
	memcpy(&v, &la.regs[APIC_LVT_LINT1], 4);
	v = (v & ~0x700u) | APIC_MODE_NMI;
	memcpy(&la.regs[APIC_LVT_LINT1], &v, 4);
	return ioctl(fd, KVM_SET_LAPIC, &la) < 0 ? -errno : 0;
}

/* MSRs firmware would have set: fast strings on, and MTRRs enabled with
 * write-back as the default type (else a guest may run all RAM uncached). */
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MISC_ENABLE_FAST_STRING 0x1
#define MTRR_ENABLE_WB ((1u << 11) | 6u)

uint32_t x86_msrs_get(int vcpu_fd, uint32_t n, const uint32_t *index, uint64_t *data)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[4];
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = n < 4 ? n : 4;
	for (uint32_t i = 0; i < m.hdr.nmsrs; i++)
		m.e[i].index = index[i];
	int got = ioctl(vcpu_fd, KVM_GET_MSRS, &m);
	for (int i = 0; i < got; i++)
		data[i] = m.e[i].data;
	return got > 0 ? (uint32_t)got : 0;
}

static int setup_msrs(int fd)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[2];
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 2;
	m.e[0].index = MSR_IA32_MISC_ENABLE;
	m.e[0].data = MISC_ENABLE_FAST_STRING;
	m.e[1].index = MSR_MTRR_DEF_TYPE;
	m.e[1].data = MTRR_ENABLE_WB;
	int n = ioctl(fd, KVM_SET_MSRS, &m);
	if (n < 0)
		return -errno;
	return n == 2 ? 0 : -EINVAL;
}

/* Report the failure @r (negative errno) of the ioctl @name. */
static int ioctl_fail(char *err, size_t errlen, const char *name, int r)
{
	return errbuf_fail(err, errlen, r, "%s: %s", name, strerror(-r));
}

/* CPUID from @base with the APIC ID and topology of vCPU @index of @count,
 * and the TSC-deadline timer if @tsc_deadline. */
static int set_cpuid(int fd, const struct kvm_cpuid2 *base, uint32_t index, uint32_t count,
		     bool tsc_deadline, char *err, size_t errlen)
{
	size_t sz = sizeof(*base) + base->nent * sizeof(base->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return errbuf_fail(err, errlen, -ENOMEM, "KVM_SET_CPUID2: out of memory for the CPUID table");
	memcpy(c, base, sz);
	fix_cpuid(c, index, count, tsc_deadline);
	int r = ioctl(fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
	free(c);
	return r < 0 ? ioctl_fail(err, errlen, "KVM_SET_CPUID2", r) : 0;
}

/* FPU control and SSE status words as after FNINIT and reset. */
static int setup_fpu(int fd)
{
	struct kvm_fpu fpu;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	return ioctl(fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

/* Long mode with flat segments from the boot GDT and the boot page tables
 * (written by boot_setup_memory). */
static int setup_boot_sregs(int fd, char *err, size_t errlen)
{
	struct kvm_sregs s;
	if (ioctl(fd, KVM_GET_SREGS, &s) < 0)
		return ioctl_fail(err, errlen, "KVM_GET_SREGS", -errno);
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = BOOT_CS, .type = 0xb,
		.present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = {
		.base = 0, .limit = 0xffffffff, .selector = BOOT_DS, .type = 0x3,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment tss = {
		.base = 0, .limit = 0x67, .selector = BOOT_TSS, .type = 0xb,
		.present = 1, .dpl = 0, .db = 0, .s = 0, .l = 0, .g = 0,
	};
	s.cs = code;
	s.ds = s.es = s.fs = s.gs = s.ss = data;
	s.tr = tss;
	s.gdt.base = BOOT_GDT_ADDR;
	s.gdt.limit = 5 * 8 - 1;
	s.idt.base = BOOT_IDT_ADDR;
	s.idt.limit = 0;
	s.cr0 = 0x80000033ULL; /* PG | NE | ET | MP | PE */
	s.cr3 = BOOT_PML4_ADDR;
	s.cr4 = 0x20; /* PAE */
	s.efer = 0x500; /* LME | LMA */
	if (ioctl(fd, KVM_SET_SREGS, &s) < 0)
		return ioctl_fail(err, errlen, "KVM_SET_SREGS", -errno);
	return 0;
}

/* Start at @entry on the boot stack with RSI = boot_params. */
static int setup_boot_regs(int fd, uint64_t entry)
{
	struct kvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = entry;
	regs.rsp = BOOT_STACK_TOP;
	regs.rbp = BOOT_STACK_TOP;
	regs.rsi = BOOT_PARAMS_ADDR;
	return ioctl(fd, KVM_SET_REGS, &regs) < 0 ? -errno : 0;
}

int x86_vcpu_setup(int fd, uint32_t index, uint32_t count, const struct kvm_cpuid2 *base,
		   bool tsc_deadline, uint64_t entry, char *err, size_t errlen)
{
	int r = set_cpuid(fd, base, index, count, tsc_deadline, err, errlen);
	if (r < 0)
		return r;
	r = setup_fpu(fd);
	if (r < 0)
		return ioctl_fail(err, errlen, "KVM_SET_FPU", r);
	r = setup_lapic(fd);
	if (r < 0)
		return ioctl_fail(err, errlen, "KVM_GET/SET_LAPIC", r);
	r = setup_msrs(fd);
	if (r < 0)
		return ioctl_fail(err, errlen, "KVM_SET_MSRS", r);

	if (index != 0)
		return 0; /* application processors wait for INIT/SIPI */

	r = setup_boot_sregs(fd, err, errlen);
	if (r < 0)
		return r;
	r = setup_boot_regs(fd, entry);
	if (r < 0)
		return ioctl_fail(err, errlen, "KVM_SET_REGS", r);
	return 0;
}
