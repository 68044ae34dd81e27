/*
 * Text built piece by piece into a caller's buffer, as snprintf() builds
 * it: what does not fit is cut (the buffer stays NUL-terminated), and the
 * length the whole text needs is counted on, for the caller to return.
 */
#ifndef MICROVM_TEXTBUF_H
#define MICROVM_TEXTBUF_H

#include <stddef.h>

struct textbuf {
	char *buf;   /* may be NULL when cap is 0 */
	size_t cap;  /* bytes at buf, NUL included */
	size_t need; /* length of the whole text so far, NUL excluded */
};

/* An empty text in @buf (@cap bytes, may be 0). */
void tb_init(struct textbuf *t, char *buf, size_t cap);

/* Append the formatted text. */
void tb_printf(struct textbuf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
