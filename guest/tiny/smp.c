/* Starts the application processors (INIT + SIPI through the local APIC),
 * waits until "ncpus=N" (default 2) CPUs are up, prints the count, resets.
 * The APs halt with interrupts off, so the host must kick them to stop. */
#include "tiny.h"

#define LAPIC 0xfee00000ULL
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define TRAMP_ADDR 0x10000

extern const char ap_tramp[], ap_tramp_end[];
static volatile uint32_t cpus_up = 1;

void ap_main(void);
void ap_main(void)
{
	__atomic_fetch_add(&cpus_up, 1, __ATOMIC_SEQ_CST);
}

static void icr(uint32_t lo)
{
	mmio_write32(LAPIC + LAPIC_ICR_HI, 0);
	mmio_write32(LAPIC + LAPIC_ICR_LO, lo);
	while (mmio_read32(LAPIC + LAPIC_ICR_LO) & (1u << 12)) /* delivery pending */
		cpu_relax();
}

void main(void *boot_params)
{
	uint64_t want = tiny_cmdline_num(boot_params, "ncpus", 2);
	memcpy((void *)TRAMP_ADDR, ap_tramp, (unsigned long)(ap_tramp_end - ap_tramp));
	mmio_write32(LAPIC + LAPIC_SVR, 0x1ff); /* software-enable the APIC */
	/* All-excluding-self shorthand (bits 19:18 = 11). */
	icr(0x000c4500);                           /* INIT, level assert */
	icr(0x000c4600 | (TRAMP_ADDR >> 12));      /* SIPI */
	icr(0x000c4600 | (TRAMP_ADDR >> 12));      /* SIPI again, as the MP spec says */
	for (uint64_t spins = 0; cpus_up < want; spins++) {
		if (spins == 200000000ULL) {
			tiny_puts("smp: timeout, cpus up: ");
			tiny_putdec(cpus_up);
			tiny_puts("\n");
			tiny_reset();
		}
		cpu_relax();
	}
	tiny_puts("smp: cpus up: ");
	tiny_putdec(cpus_up);
	tiny_puts("\n");
	tiny_reset();
}
