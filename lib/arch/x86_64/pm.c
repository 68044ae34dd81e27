#include "arch/x86_64/pm.h"

#include <string.h>

#include "arch/x86_64/acpi.h"
#include "bus.h"
#include "devices/host.h"
#include "microvm.h"

static void pm_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	(void)opaque;
	(void)off;
	memset(data, 0, len); /* no wake status, sleep control reads as 0 */
}

static void pm_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct pm *pm = opaque;
	(void)len;
	if (off == 0 && /* ACPI_SLEEP_CONTROL_PORT */
	    acpi_sleep_write_is_poweroff(*(const uint8_t *)data))
		host_exit(pm->host, MICROVM_EXIT_POWEROFF, "guest powered off (ACPI S5)");
	/* ACPI_SLEEP_STATUS_PORT: clearing wake status needs nothing. */
}

const struct bus_ops pm_ops = { pm_read, pm_write };

void pm_init(void *dev, const struct dev_host *host)
{
	struct pm *pm = dev;
	pm->host = host;
}
