/* The size-versioned struct rules of <microvm.h>; see abi.h. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "abi.h"
#include "errbuf.h"

/* The first releases' layouts on x86_64: a change here breaks old callers. */
_Static_assert(ABI_DISK_CONFIG_MIN == 24, "microvm_disk_config 0.1 layout changed");
_Static_assert(ABI_EXIT_MIN == 272, "microvm_exit 0.1 layout changed");
_Static_assert(ABI_VSOCK_CONFIG_MIN == 24, "microvm_vsock_config 0.2 layout changed");
_Static_assert(ABI_RESTORE_CONFIG_MIN == 48, "microvm_restore_config 0.2 layout changed");
_Static_assert(ABI_EXEC_CONFIG_MIN == 80, "microvm_exec_config 0.2 layout changed");
_Static_assert(ABI_EXEC_RESULT_MIN == 48, "microvm_exec_result 0.2 layout changed");

static uint32_t caller_size(const void *s)
{
	uint32_t size;
	memcpy(&size, s, sizeof(size));
	return size;
}

static int check_min(uint32_t size, size_t min_size, const char *what, char *err,
		     size_t errlen)
{
	if (size >= min_size)
		return 0;
	return errbuf_fail(err, errlen, -EINVAL, "%s size %u is smaller than %zu, its size in "
			   "the first release (set size with the _INIT macro)", what, size,
			   min_size);
}

int abi_copy_in(void *dst, size_t dst_size, const void *src, size_t min_size, const char *what,
		char *err, size_t errlen)
{
	if (!src)
		return errbuf_fail(err, errlen, -EINVAL, "%s is NULL", what);
	uint32_t size = caller_size(src);
	int r = check_min(size, min_size, what, err, errlen);
	if (r < 0)
		return r;
	const unsigned char *s = src;
	for (size_t i = dst_size; i < size; i++)
		if (s[i])
			return errbuf_fail(err, errlen, -EINVAL, "%s size %u: byte %zu is set, "
					   "beyond the %zu bytes this libmicrovm knows (a field "
					   "of a newer version it does not have)", what, size, i,
					   dst_size);
	size_t n = size < dst_size ? size : dst_size;
	memcpy(dst, src, n);
	memset((unsigned char *)dst + n, 0, dst_size - n);
	uint32_t known = (uint32_t)dst_size;
	memcpy(dst, &known, sizeof(known));
	return 0;
}

int abi_prepare_out(void *dst, size_t known, size_t min_size, const char *what, char *err,
		    size_t errlen)
{
	if (!dst)
		return errbuf_fail(err, errlen, -EINVAL, "%s is NULL", what);
	uint32_t size = caller_size(dst);
	int r = check_min(size, min_size, what, err, errlen);
	if (r < 0)
		return r;
	if (size > known)
		memset((unsigned char *)dst + known, 0, size - known);
	return 0;
}
