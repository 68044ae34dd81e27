/* Error reporting for the pure loaders and table builders (ELF, bzImage,
 * boot params, MP/ACPI tables), which have no VM object: they write the
 * message into the caller's buffer and return the error code. */
#ifndef MICROVM_ERRBUF_H
#define MICROVM_ERRBUF_H

#include <stddef.h>

/* Format the message into @err (@errlen bytes, may be 0) and return @code. */
int errbuf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
