#include "devices/host.h"

#include <stdarg.h>
#include <stdio.h>

void host_log(const struct dev_host *h, int level, const char *fmt, ...)
{
	if (!h || !h->log)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h->log(h->ctx, level, msg);
}

void host_exit(const struct dev_host *h, uint32_t reason, const char *fmt, ...)
{
	if (!h || !h->exit)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h->exit(h->ctx, reason, msg);
}

int host_irq_line(const struct dev_host *h, uint32_t gsi, int level)
{
	return h && h->irq_line ? h->irq_line(h->ctx, gsi, level) : 0;
}

bool host_yield(const struct dev_host *h)
{
	return !h || !h->yield || h->yield(h->ctx);
}

bool host_stopped(const struct dev_host *h)
{
	return h && h->stopped && h->stopped(h->ctx);
}
