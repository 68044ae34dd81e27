/* ACPI power management: the hardware-reduced sleep control/status
 * registers the FADT announces (lib/arch/x86_64/acpi.h). A write of S5 to
 * the sleep control register powers the VM off. */
#ifndef MICROVM_PM_H
#define MICROVM_PM_H

struct dev_host;

struct pm {
	const struct dev_host *host;
};

void pm_init(void *dev, const struct dev_host *host);

struct bus_ops;
extern const struct bus_ops pm_ops; /* registered on [0x600, 0x602) */

#endif
