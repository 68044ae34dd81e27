#include "arch/arch.h"

#include <errno.h>
#include <stdlib.h>

#include "arch/x86_64/acpi.h"
#include "arch/x86_64/platform.h"
#include "bus.h"
#include "snapshot/state.h"

/* One row per platform device. The device lives in struct arch_platform at
 * @offset; @init runs before its ports are registered. */
struct platform_row {
	const char *name; /* also its snapshot node */
	size_t offset;
	uint16_t port, nports;
	const struct bus_ops *ops;
	void (*init)(void *dev, const struct dev_host *host);
	void (*destroy)(void *dev); /* optional */
	void (*save)(void *dev, struct st_writer *w, int node); /* optional */
	int (*load)(void *dev, const void *fdt, int node, char *err, size_t errlen);
};

static const struct platform_row rows[] = {
	{ "serial", offsetof(struct arch_platform, serial), SERIAL_COM1_BASE, SERIAL_NR_PORTS,
	  &serial_ops, serial_init, serial_destroy, serial_save, serial_load },
	{ "i8042", offsetof(struct arch_platform, i8042), I8042_DATA_PORT,
	  I8042_CMD_PORT - I8042_DATA_PORT + 1, &i8042_ops, i8042_init, i8042_destroy,
	  i8042_save, i8042_load },
	{ "acpi-pm", offsetof(struct arch_platform, pm), ACPI_SLEEP_CONTROL_PORT, 2, &pm_ops, pm_init,
	  NULL, NULL, NULL },
	{ "rtc", offsetof(struct arch_platform, rtc), RTC_PORT, RTC_NR_PORTS, &rtc_ops, rtc_init,
	  rtc_destroy, rtc_save, rtc_load },
};
#define NR_ROWS (sizeof(rows) / sizeof(rows[0]))

static void *dev_of(struct arch_platform *p, const struct platform_row *row)
{
	return (char *)p + row->offset;
}

int platform_create(const struct dev_host *host, struct bus *pio, struct arch_platform **out)
{
	struct arch_platform *p = calloc(1, sizeof(*p));
	*out = p;
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < NR_ROWS; i++)
		rows[i].init(dev_of(p, &rows[i]), host);
	for (size_t i = 0; i < NR_ROWS; i++) {
		int r = bus_register(pio, rows[i].port, rows[i].nports, rows[i].ops,
				     dev_of(p, &rows[i]), rows[i].name);
		if (r < 0)
			return r;
	}
	return 0;
}

void platform_destroy(struct arch_platform *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < NR_ROWS; i++)
		if (rows[i].destroy)
			rows[i].destroy(dev_of(p, &rows[i]));
	free(p);
}

void platform_set_console(struct arch_platform *p, int in_fd, int out_fd)
{
	serial_set_fds(&p->serial, in_fd, out_fd);
}

int platform_start(struct arch_platform *p, struct evloop *loop)
{
	return serial_attach(&p->serial, loop);
}

void platform_save(struct arch_platform *p, struct st_writer *w, int node)
{
	for (size_t i = 0; i < NR_ROWS; i++)
		if (rows[i].save)
			rows[i].save(dev_of(p, &rows[i]), w, st_node(w, node, rows[i].name));
}

int platform_load(struct arch_platform *p, const void *fdt, int node, char *err, size_t errlen)
{
	for (size_t i = 0; i < NR_ROWS; i++) {
		if (!rows[i].load)
			continue;
		int n = st_sub(fdt, node, rows[i].name, err, errlen);
		int r = n < 0 ? n : rows[i].load(dev_of(p, &rows[i]), fdt, n, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}
