/*
 * x86-64 vCPU report for microvm_describe(): what one needs to tell a
 * halted guest waiting for an interrupt from a vCPU stuck in a loop or at
 * a corrupt address: the run state, registers that say where it is, the
 * events KVM holds for it, and its local APIC's pending and in-service
 * vectors and timer. Read with the vCPU out of KVM_RUN (paused or
 * stopped); what KVM refuses is left out.
 */
#include "arch/arch.h"

#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "arch/x86_64/cpu.h"
#include "textbuf.h"

#define MSR_TSC 0x10u
#define MSR_TSC_DEADLINE 0x6e0u
#define APIC_ISR 0x100u
#define APIC_TMR 0x180u
#define APIC_IRR 0x200u
#define APIC_LVT_TIMER 0x320u
#define APIC_TMICT 0x380u

static const char *const mp_names[] = {
	"runnable", "uninitialized", "init-received", "halted", "sipi-received",
	"stopped", "check-stop", "operating", "load", "ap-reset-hold", "suspended",
};

static uint32_t apic_reg(const struct kvm_lapic_state *l, uint32_t off)
{
	uint32_t v;
	memcpy(&v, l->regs + off, sizeof(v));
	return v;
}

/* The vectors set in the 256-bit APIC register at @off (8 words, 16 bytes
 * apart), highest first, at most 8 of them. */
static void apic_vectors(const struct kvm_lapic_state *l, uint32_t off, const char *name,
			 struct textbuf *t)
{
	tb_printf(t, " %s", name);
	int shown = 0;
	for (int v = 255; v >= 0 && shown < 8; v--)
		if (apic_reg(l, off + (uint32_t)(v / 32) * 16) & (1u << (v % 32))) {
			tb_printf(t, "%s%d", shown ? "," : "=", v);
			shown++;
		}
	if (!shown)
		tb_printf(t, "=-");
}

static void report_regs(int fd, struct textbuf *t)
{
	struct kvm_mp_state mp;
	if (ioctl(fd, KVM_GET_MP_STATE, &mp) == 0)
		tb_printf(t, " %s", mp.mp_state < sizeof(mp_names) / sizeof(mp_names[0])
					    ? mp_names[mp.mp_state] : "mp-state?");
	struct kvm_regs r;
	if (ioctl(fd, KVM_GET_REGS, &r) == 0)
		tb_printf(t, " rip=0x%llx rsp=0x%llx rflags=0x%llx", (unsigned long long)r.rip,
			  (unsigned long long)r.rsp, (unsigned long long)r.rflags);
	struct kvm_sregs s;
	if (ioctl(fd, KVM_GET_SREGS, &s) == 0)
		tb_printf(t, " cr0=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx",
			  (unsigned long long)s.cr0, (unsigned long long)s.cr3,
			  (unsigned long long)s.cr4, (unsigned long long)s.efer);
}

static void report_events(int fd, struct textbuf *t)
{
	struct kvm_vcpu_events e;
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &e) < 0)
		return;
	tb_printf(t, "events:");
	if (e.exception.injected || e.exception.pending)
		tb_printf(t, " exception %u (%s)", e.exception.nr,
			  e.exception.injected ? "injected" : "pending");
	if (e.interrupt.injected)
		tb_printf(t, " interrupt %u injected", e.interrupt.nr);
	if (e.nmi.injected || e.nmi.pending)
		tb_printf(t, " nmi%s%s", e.nmi.injected ? " injected" : "",
			  e.nmi.pending ? " pending" : "");
	if (e.interrupt.shadow)
		tb_printf(t, " interrupt shadow");
	if (!e.exception.injected && !e.exception.pending && !e.interrupt.injected &&
	    !e.nmi.injected && !e.nmi.pending && !e.interrupt.shadow)
		tb_printf(t, " none");
}

static void report_timer(int fd, const struct kvm_lapic_state *l, struct textbuf *t)
{
	uint32_t lvt = apic_reg(l, APIC_LVT_TIMER);
	static const char *const modes[] = { "one-shot", "periodic", "tsc-deadline", "mode?" };
	tb_printf(t, " timer %s%s vector %u", modes[(lvt >> 17) & 3],
		  lvt & (1u << 16) ? " masked" : "", lvt & 0xff);
	if (((lvt >> 17) & 3) != 2) {
		tb_printf(t, " count %u", apic_reg(l, APIC_TMICT));
		return;
	}
	static const uint32_t idx[2] = { MSR_TSC, MSR_TSC_DEADLINE };
	uint64_t v[2];
	if (x86_msrs_get(fd, 2, idx, v) == 2)
		tb_printf(t, " deadline %s (tsc %llu, deadline %llu)",
			  v[1] == 0 ? "disarmed" : v[1] > v[0] ? "ahead" : "passed",
			  (unsigned long long)v[0], (unsigned long long)v[1]);
}

void arch_vcpu_report(int vcpu_fd, const char *indent, struct textbuf *t)
{
	report_regs(vcpu_fd, t);
	tb_printf(t, "\n%s", indent);
	report_events(vcpu_fd, t);
	struct kvm_lapic_state l;
	if (ioctl(vcpu_fd, KVM_GET_LAPIC, &l) == 0) {
		tb_printf(t, "\n%sapic:", indent);
		apic_vectors(&l, APIC_IRR, "irr", t);
		apic_vectors(&l, APIC_ISR, "isr", t);
		apic_vectors(&l, APIC_TMR, "tmr", t);
		report_timer(vcpu_fd, &l, t);
	}
	tb_printf(t, "\n");
}
