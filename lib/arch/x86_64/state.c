#include "arch/arch.h"

#include <errno.h>
#include <libfdt.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "errbuf.h"
#include "snapshot/state.h"

#define MAX_MSRS 1024u
#define MAX_CPUID 256u
#define MAX_VCPUS_SKEW 256u
#define MSR_TSC 0x10u
#define MSR_TSC_DEADLINE 0x6e0u

static int io_err(char *err, size_t errlen, const char *what)
{
	int e = errno;
	return errbuf_fail(err, errlen, -e, "%s: %s", what, strerror(e));
}

/* Size of the XSAVE area KVM uses (>4096 with AMX): 4096 without XSAVE2. */
static size_t xsave_size(int kvm_fd)
{
	int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

/* Simple fixed-size get -> property. */
#define SAVE(fd, req, type, name)                                         \
	do {                                                              \
		type s_;                                                  \
		memset(&s_, 0, sizeof(s_));                               \
		if (ioctl(fd, req, &s_) < 0)                              \
			return io_err(err, errlen, #req);                 \
		st_blob(w, node, name, &s_, sizeof(s_));                  \
	} while (0)

#define LOAD(fd, req, type, name)                                             \
	do {                                                                  \
		type s_;                                                      \
		int r_ = st_get_blob(fdt, node, name, &s_, sizeof(s_), err, errlen); \
		if (r_ < 0)                                                   \
			return r_;                                            \
		if (ioctl(fd, req, &s_) < 0)                                  \
			return io_err(err, errlen, #req);                     \
	} while (0)

static int save_msrs(int kvm_fd, int vcpu_fd, struct st_writer *w, int node, char *err,
		     size_t errlen)
{
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + MAX_MSRS * sizeof(uint32_t));
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + MAX_MSRS * sizeof(struct kvm_msr_entry));
	int r = 0;
	if (!list || !msrs) {
		r = errbuf_fail(err, errlen, -ENOMEM, "MSRs: out of memory");
		goto out;
	}
	list->nmsrs = MAX_MSRS;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		r = io_err(err, errlen, "KVM_GET_MSR_INDEX_LIST");
		goto out;
	}
	/* KVM_GET_MSRS stops at the first MSR it cannot read: skip that one
	 * and go on, so the saved list holds exactly the readable ones. */
	uint32_t saved = 0, next = 0;
	while (next < list->nmsrs) {
		uint32_t want = list->nmsrs - next;
		struct kvm_msrs *tmp = calloc(1, sizeof(*tmp) + want * sizeof(struct kvm_msr_entry));
		if (!tmp) {
			r = errbuf_fail(err, errlen, -ENOMEM, "MSRs: out of memory");
			goto out;
		}
		tmp->nmsrs = want;
		for (uint32_t i = 0; i < want; i++)
			tmp->entries[i].index = list->indices[next + i];
		int got = ioctl(vcpu_fd, KVM_GET_MSRS, tmp);
		if (got < 0) {
			free(tmp);
			r = io_err(err, errlen, "KVM_GET_MSRS");
			goto out;
		}
		for (int i = 0; i < got; i++)
			msrs->entries[saved++] = tmp->entries[i];
		free(tmp);
		next += (uint32_t)got + 1; /* skip the unreadable one */
	}
	st_blob(w, node, "msrs", msrs->entries, saved * sizeof(struct kvm_msr_entry));
out:
	free(list);
	free(msrs);
	return r;
}

int arch_vcpu_save(int kvm_fd, int vcpu_fd, struct st_writer *w, int node, char *err,
		  size_t errlen)
{
	/* CPUID as set at creation. */
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
	if (!cpuid)
		return errbuf_fail(err, errlen, -ENOMEM, "CPUID: out of memory");
	cpuid->nent = MAX_CPUID;
	if (ioctl(vcpu_fd, KVM_GET_CPUID2, cpuid) < 0) {
		free(cpuid);
		return io_err(err, errlen, "KVM_GET_CPUID2");
	}
	st_blob(w, node, "cpuid", cpuid->entries, cpuid->nent * sizeof(struct kvm_cpuid_entry2));
	free(cpuid);

	SAVE(vcpu_fd, KVM_GET_MP_STATE, struct kvm_mp_state, "mp-state");
	SAVE(vcpu_fd, KVM_GET_REGS, struct kvm_regs, "regs");
	SAVE(vcpu_fd, KVM_GET_SREGS, struct kvm_sregs, "sregs");

	size_t xs = xsave_size(kvm_fd);
	void *xsave = calloc(1, xs);
	if (!xsave)
		return errbuf_fail(err, errlen, -ENOMEM, "XSAVE: out of memory");
	unsigned long req = xs > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
	if (ioctl(vcpu_fd, req, xsave) < 0) {
		free(xsave);
		return io_err(err, errlen, "KVM_GET_XSAVE");
	}
	st_blob(w, node, "xsave", xsave, xs);
	free(xsave);

	SAVE(vcpu_fd, KVM_GET_XCRS, struct kvm_xcrs, "xcrs");
	SAVE(vcpu_fd, KVM_GET_DEBUGREGS, struct kvm_debugregs, "debugregs");
	SAVE(vcpu_fd, KVM_GET_LAPIC, struct kvm_lapic_state, "lapic");
	int r = save_msrs(kvm_fd, vcpu_fd, w, node, err, errlen);
	if (r < 0)
		return r;
	SAVE(vcpu_fd, KVM_GET_VCPU_EVENTS, struct kvm_vcpu_events, "events");
	return w->err;
}

int arch_vcpu_load(int kvm_fd, int vcpu_fd, const void *fdt, int node, char *err, size_t errlen)
{
	const void *p;
	size_t len;
	int r = st_get_var(fdt, node, "cpuid", &p, &len,
			   MAX_CPUID * sizeof(struct kvm_cpuid_entry2), err, errlen);
	if (r < 0)
		return r;
	if (len == 0 || len % sizeof(struct kvm_cpuid_entry2))
		return errbuf_fail(err, errlen, -EINVAL, "state cpuid: %zu bytes is not a CPUID table", len);
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + len);
	if (!cpuid)
		return errbuf_fail(err, errlen, -ENOMEM, "CPUID: out of memory");
	cpuid->nent = (uint32_t)(len / sizeof(struct kvm_cpuid_entry2));
	memcpy(cpuid->entries, p, len);
	r = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (r < 0)
		return io_err(err, errlen, "KVM_SET_CPUID2 (the snapshot's CPU features do not "
			      "fit this host)");
	return arch_vcpu_load_state(kvm_fd, vcpu_fd, NULL, NULL, fdt, node, err, errlen);
}

static int load_xsave(size_t xs, int vcpu_fd, const void *fdt, int node, char *err,
		      size_t errlen)
{
	const void *p;
	size_t len;
	int r = st_get_var(fdt, node, "xsave", &p, &len, xs, err, errlen);
	if (r < 0)
		return r;
	if (len < sizeof(struct kvm_xsave))
		return errbuf_fail(err, errlen, -EINVAL, "state xsave: %zu bytes, expected at least %zu", len,
			   sizeof(struct kvm_xsave));
	void *xsave = calloc(1, xs);
	if (!xsave)
		return errbuf_fail(err, errlen, -ENOMEM, "XSAVE: out of memory");
	memcpy(xsave, p, len);
	r = ioctl(vcpu_fd, KVM_SET_XSAVE, xsave);
	free(xsave);
	return r < 0 ? io_err(err, errlen, "KVM_SET_XSAVE") : 0;
}

static int load_msrs(int vcpu_fd, const void *fdt, int node, char *err, size_t errlen)
{
	const void *p;
	size_t len;
	int r = st_get_var(fdt, node, "msrs", &p, &len, MAX_MSRS * sizeof(struct kvm_msr_entry), err,
			   errlen);
	if (r < 0)
		return r;
	if (len % sizeof(struct kvm_msr_entry))
		return errbuf_fail(err, errlen, -EINVAL, "state msrs: %zu bytes is not an MSR table", len);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + len);
	if (!msrs)
		return errbuf_fail(err, errlen, -ENOMEM, "MSRs: out of memory");
	msrs->nmsrs = (uint32_t)(len / sizeof(struct kvm_msr_entry));
	memcpy(msrs->entries, p, len);
	int set = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
	if (set < 0)
		r = io_err(err, errlen, "KVM_SET_MSRS");
	else if ((uint32_t)set != msrs->nmsrs)
		r = errbuf_fail(err, errlen, -EINVAL, "KVM_SET_MSRS: MSR 0x%x rejected by this host",
				msrs->entries[set].index);
	free(msrs);
	return r;
}

#define SYNC_ALL (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS)

/* Registers, special registers and events into @run, for KVM to set at
 * the vCPU's next KVM_RUN (the vCPU has no I/O pending: it parks only after
 * completing it, lib/vcpu.c). */
static int load_sync(struct kvm_run *run, const void *fdt, int node, char *err, size_t errlen)
{
	int r = st_get_blob(fdt, node, "regs", &run->s.regs.regs, sizeof(struct kvm_regs), err,
			    errlen);
	if (r == 0)
		r = st_get_blob(fdt, node, "sregs", &run->s.regs.sregs, sizeof(struct kvm_sregs),
				err, errlen);
	if (r == 0)
		r = st_get_blob(fdt, node, "events", &run->s.regs.events,
				sizeof(struct kvm_vcpu_events), err, errlen);
	if (r == 0)
		run->kvm_dirty_regs |= SYNC_ALL;
	return r;
}

/* What the loads need to know of KVM, asked once per VM with @known. */
static void learn(int kvm_fd, const struct kvm_run *run, struct arch_known *known)
{
	if (run && !known->sync_regs) {
		int caps = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
		known->sync_regs = caps > 0 && (caps & SYNC_ALL) == SYNC_ALL ? 1 : -1;
	}
	if (!known->xsave_size)
		known->xsave_size = (uint32_t)xsave_size(kvm_fd);
}

int arch_vcpu_load_state(int kvm_fd, int vcpu_fd, struct kvm_run *run, struct arch_known *known,
			 const void *fdt, int node, char *err, size_t errlen)
{
	struct arch_known local = { 0 };
	known = known ? known : &local;
	learn(kvm_fd, run, known);
	bool sync = run && known->sync_regs > 0;
	LOAD(vcpu_fd, KVM_SET_MP_STATE, struct kvm_mp_state, "mp-state");
	if (!sync) {
		LOAD(vcpu_fd, KVM_SET_REGS, struct kvm_regs, "regs");
		LOAD(vcpu_fd, KVM_SET_SREGS, struct kvm_sregs, "sregs");
	}
	int r = load_xsave(known->xsave_size, vcpu_fd, fdt, node, err, errlen);
	if (r < 0)
		return r;
	LOAD(vcpu_fd, KVM_SET_XCRS, struct kvm_xcrs, "xcrs");
	LOAD(vcpu_fd, KVM_SET_DEBUGREGS, struct kvm_debugregs, "debugregs");
	LOAD(vcpu_fd, KVM_SET_LAPIC, struct kvm_lapic_state, "lapic");
	r = load_msrs(vcpu_fd, fdt, node, err, errlen);
	if (r < 0)
		return r;
	if (sync)
		return load_sync(run, fdt, node, err, errlen);
	LOAD(vcpu_fd, KVM_SET_VCPU_EVENTS, struct kvm_vcpu_events, "events");
	return 0;
}

int arch_vcpu_sync_flush(int vcpu_fd, struct kvm_run *run)
{
	uint64_t d = run->kvm_dirty_regs;
	if ((d & KVM_SYNC_X86_REGS) && ioctl(vcpu_fd, KVM_SET_REGS, &run->s.regs.regs) < 0)
		return -errno;
	if ((d & KVM_SYNC_X86_SREGS) && ioctl(vcpu_fd, KVM_SET_SREGS, &run->s.regs.sregs) < 0)
		return -errno;
	if ((d & KVM_SYNC_X86_EVENTS) &&
	    ioctl(vcpu_fd, KVM_SET_VCPU_EVENTS, &run->s.regs.events) < 0)
		return -errno;
	run->kvm_dirty_regs = 0;
	return 0;
}

static const struct {
	uint32_t chip_id;
	const char *name;
} chips[] = {
	{ KVM_IRQCHIP_PIC_MASTER, "pic-master" },
	{ KVM_IRQCHIP_PIC_SLAVE, "pic-slave" },
	{ KVM_IRQCHIP_IOAPIC, "ioapic" },
};

int arch_vm_save(int vm_fd, bool pit, struct st_writer *w, int node, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip c = { .chip_id = chips[i].chip_id };
		if (ioctl(vm_fd, KVM_GET_IRQCHIP, &c) < 0)
			return io_err(err, errlen, "KVM_GET_IRQCHIP");
		st_blob(w, node, chips[i].name, &c, sizeof(c));
	}
	if (pit)
		SAVE(vm_fd, KVM_GET_PIT2, struct kvm_pit_state2, "pit");
	return w->err;
}

int arch_vm_load(int vm_fd, bool pit, const void *fdt, int node, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip c;
		int r = st_get_blob(fdt, node, chips[i].name, &c, sizeof(c), err, errlen);
		if (r < 0)
			return r;
		if (c.chip_id != chips[i].chip_id)
			return errbuf_fail(err, errlen, -EINVAL, "state %s: wrong chip id %u", chips[i].name,
				   c.chip_id);
		if (ioctl(vm_fd, KVM_SET_IRQCHIP, &c) < 0)
			return io_err(err, errlen, "KVM_SET_IRQCHIP");
	}
	if (pit)
		LOAD(vm_fd, KVM_SET_PIT2, struct kvm_pit_state2, "pit");
	return 0; /* the clock: arch_clock_load() */
}

/* ------------------------------------------------------------------ clocks */

/*
 * The guest's two clocks, kvmclock (VM-wide) and the vCPUs' TSCs, are saved
 * at one moment and restored at one moment, so that the guest sees them
 * agree as they did (kvmclock nanoseconds = TSC ticks / frequency + a
 * constant) and its TSCs stay synchronized with each other:
 *  - save: KVM_GET_CLOCK, then at once vCPU 0's TSC ("tsc-ref"), and each
 *    vCPU's TSC offset relative to vCPU 0's ("tsc-skew", 0 on a VM that
 *    booted here: KVM syncs the TSCs of new vCPUs);
 *  - restore, once every vCPU is loaded: KVM_SET_CLOCK, then at once read
 *    vCPU 0's TSC and move every vCPU's TSC offset (KVM_VCPU_TSC_OFFSET) so
 *    that vCPU 0 reads tsc-ref at that moment and the others keep their
 *    skew. The TSC-deadline timers are armed again against the new TSC.
 * Restoring TSCs through the TSC MSR alone does neither: each vCPU's value
 * was read at another moment, and KVM takes a host write of it as a new,
 * unsynchronized TSC. Without the attribute (Linux < 5.16) or for a snapshot
 * without tsc-ref, the MSR values stand.
 */

static int set_clock(int vm_fd, uint64_t clock, char *err, size_t errlen)
{
	struct kvm_clock_data clk;
	memset(&clk, 0, sizeof(clk));
	clk.clock = clock;
	if (ioctl(vm_fd, KVM_SET_CLOCK, &clk) < 0)
		return io_err(err, errlen, "KVM_SET_CLOCK");
	return 0;
}

static int tsc_attr(int vcpu_fd, unsigned long req, uint64_t *offset)
{
	struct kvm_device_attr a = {
		.group = KVM_VCPU_TSC_CTRL,
		.attr = KVM_VCPU_TSC_OFFSET,
		.addr = (uint64_t)(uintptr_t)offset,
	};
	return ioctl(vcpu_fd, req, &a);
}

static int read_tsc(int vcpu_fd, uint64_t *tsc)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m;
	memset(&m, 0, sizeof(m));
	m.h.nmsrs = 1;
	m.e.index = MSR_TSC;
	if (ioctl(vcpu_fd, KVM_GET_MSRS, &m) != 1)
		return -1;
	*tsc = m.e.data;
	return 0;
}

int arch_clock_save(int vm_fd, const int *vcpu_fds, uint32_t n, struct st_writer *w, int node,
		    char *err, size_t errlen)
{
	struct kvm_clock_data clk;
	memset(&clk, 0, sizeof(clk));
	uint64_t tsc;
	if (ioctl(vm_fd, KVM_GET_CLOCK, &clk) < 0)
		return io_err(err, errlen, "KVM_GET_CLOCK");
	if (read_tsc(vcpu_fds[0], &tsc) < 0)
		return io_err(err, errlen, "KVM_GET_MSRS (TSC)");
	st_u64(w, node, "clock", clk.clock);
	uint64_t base, skew[MAX_VCPUS_SKEW];
	if (n > MAX_VCPUS_SKEW || tsc_attr(vcpu_fds[0], KVM_HAS_DEVICE_ATTR, &base) < 0)
		return w->err; /* no TSC offsets: the MSR values stand on restore */
	for (uint32_t i = 0; i < n; i++) {
		if (tsc_attr(vcpu_fds[i], KVM_GET_DEVICE_ATTR, &skew[i]) < 0)
			return io_err(err, errlen, "KVM_GET_DEVICE_ATTR (TSC offset)");
		skew[i] -= i ? skew[0] : 0;
	}
	skew[0] = 0;
	st_u64(w, node, "tsc-ref", tsc);
	st_blob(w, node, "tsc-skew", skew, n * sizeof(uint64_t));
	return w->err;
}

/* Arm vCPU @fd's TSC-deadline timer again (if the guest had one) against
 * its TSC as it is now; @msrs holds the saved MSRs. */
static int rearm_deadline(int fd, const void *fdt, int vnode, char *err, size_t errlen)
{
	const void *p;
	size_t len;
	int r = st_get_var(fdt, vnode, "msrs", &p, &len, MAX_MSRS * sizeof(struct kvm_msr_entry),
			   err, errlen);
	for (size_t i = 0; r == 0 && i < len / sizeof(struct kvm_msr_entry); i++) {
		struct {
			struct kvm_msrs h;
			struct kvm_msr_entry e;
		} m;
		memset(&m, 0, sizeof(m));
		memcpy(&m.e, (const struct kvm_msr_entry *)p + i, sizeof(m.e));
		if (m.e.index != MSR_TSC_DEADLINE || m.e.data == 0)
			continue;
		m.h.nmsrs = 1;
		if (ioctl(fd, KVM_SET_MSRS, &m) != 1)
			r = io_err(err, errlen, "KVM_SET_MSRS (TSC deadline)");
	}
	return r;
}

/* Whether the vCPUs have the TSC offset attribute (asked once per VM). */
static bool has_tsc_attr(int fd, struct arch_known *known)
{
	uint64_t unused;
	if (!known->tsc_attr)
		known->tsc_attr = tsc_attr(fd, KVM_HAS_DEVICE_ATTR, &unused) < 0 ? -1 : 1;
	return known->tsc_attr > 0;
}

/*
 * Set kvmclock to @clock and, at once, find the TSC offset of vCPU 0 (@fd)
 * that makes its TSC read @ref at that moment. KVM's guest TSC is host TSC
 * * ratio + offset: with the ratio 1 (no TSC scaling: checked once, the
 * guest's TSC read from KVM falling between two host reads around it) the
 * host's TSC alone gives it, else ask KVM (two vCPU ioctls).
 */
static int set_clock_tsc0(int vm_fd, int fd, uint64_t clock, uint64_t ref,
			  struct arch_known *known, uint64_t *off, char *err, size_t errlen)
{
	uint64_t cur = 0, now;
	if (!known->tsc_plain && tsc_attr(fd, KVM_GET_DEVICE_ATTR, &cur) < 0)
		return io_err(err, errlen, "KVM_GET_DEVICE_ATTR (TSC offset)");
	int r = set_clock(vm_fd, clock, err, errlen);
	if (r < 0)
		return r;
	uint64_t t0 = __builtin_ia32_rdtsc();
	if (known->tsc_plain) {
		*off = ref - t0;
		return 0;
	}
	if (read_tsc(fd, &now) < 0)
		return io_err(err, errlen, "KVM_GET_MSRS (TSC)");
	uint64_t t1 = __builtin_ia32_rdtsc();
	known->tsc_plain = now - cur - t0 <= t1 - t0;
	*off = cur + ref - now;
	return 0;
}

int arch_clock_load(int vm_fd, const int *vcpu_fds, const int *vcpu_nodes, uint32_t n,
		    const void *fdt, int node, struct arch_known *known, char *err,
		    size_t errlen)
{
	uint64_t clock, ref, base = 0;
	const void *p;
	size_t len;
	int r = st_get_u64(fdt, node, "clock", &clock, err, errlen);
	if (r < 0)
		return r;
	/* An older snapshot, or an older KVM: the TSC MSR values stand. */
	if (fdt_getprop(fdt, node, "tsc-ref", NULL) == NULL || !has_tsc_attr(vcpu_fds[0], known))
		return set_clock(vm_fd, clock, err, errlen);
	r = st_get_u64(fdt, node, "tsc-ref", &ref, err, errlen);
	if (r == 0)
		r = st_get_var(fdt, node, "tsc-skew", &p, &len, n * sizeof(uint64_t), err, errlen);
	if (r < 0)
		return r;
	if (len != n * sizeof(uint64_t))
		return errbuf_fail(err, errlen, -EINVAL, "state tsc-skew: %zu bytes for %u vCPUs",
				   len, n);
	/* The clock and the TSC together, as they were saved. */
	r = set_clock_tsc0(vm_fd, vcpu_fds[0], clock, ref, known, &base, err, errlen);
	for (uint32_t i = 0; r == 0 && i < n; i++) {
		uint64_t skew, off;
		memcpy(&skew, (const uint64_t *)p + i, sizeof(skew));
		off = base + skew;
		if (tsc_attr(vcpu_fds[i], KVM_SET_DEVICE_ATTR, &off) < 0)
			r = io_err(err, errlen, "KVM_SET_DEVICE_ATTR (TSC offset)");
		else
			r = rearm_deadline(vcpu_fds[i], fdt, vcpu_nodes[i], err, errlen);
	}
	return r;
}
