#include "textbuf.h"

#include <stdarg.h>
#include <stdio.h>

void tb_init(struct textbuf *t, char *buf, size_t cap)
{
	*t = (struct textbuf){ .buf = cap ? buf : NULL, .cap = buf ? cap : 0 };
	if (t->cap)
		t->buf[0] = '\0';
}

void tb_printf(struct textbuf *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n;
	if (t->need < t->cap)
		n = vsnprintf(t->buf + t->need, t->cap - t->need, fmt, ap);
	else
		n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->need += (size_t)n;
}
