/*
 * Size-versioned public structs (their first field is "uint32_t size", set
 * by the caller from its own header's sizeof). A struct only ever grows at
 * its end, so a caller built against any release passes a prefix of what
 * this library knows, or a struct with fields this library does not know
 * after it. One pair of helpers applies the rules everywhere.
 */
#ifndef MICROVM_ABI_H
#define MICROVM_ABI_H

#include <stddef.h>

#include "microvm.h"
#include "microvm_agent.h"

/*
 * The smallest accepted size of each struct: its layout in the release that
 * introduced it (the end of its last field then). Never change these.
 */
#define ABI_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define ABI_DISK_CONFIG_MIN ABI_END(microvm_disk_config, serial)          /* 0.1 */
#define ABI_EXIT_MIN ABI_END(microvm_exit, message)                       /* 0.1 */
#define ABI_VSOCK_CONFIG_MIN ABI_END(microvm_vsock_config, uds_path)      /* 0.2 */
#define ABI_RESTORE_CONFIG_MIN ABI_END(microvm_restore_config, vsock_uds_path) /* 0.2 */
#define ABI_FORK_CONFIG_MIN ABI_END(microvm_fork_config, kick_signal)    /* 0.4 */
#define ABI_EXEC_CONFIG_MIN ABI_END(microvm_exec_config, output_limit)    /* 0.2 */
#define ABI_EXEC_RESULT_MIN ABI_END(microvm_exec_result, err_len)         /* 0.2 */
#define ABI_NET_CONFIG_MIN ABI_END(microvm_net_config, reserved2)         /* 0.4 */
#define ABI_NET_STATS_MIN ABI_END(microvm_net_counters, tx_malformed)        /* 0.4 */

/*
 * Input struct: copy the caller's @src into @dst (@dst_size bytes, the
 * struct as this library knows it). A caller's smaller (older) struct
 * gives the fields it lacks as zeros; a larger (newer) one must have every
 * byte this library does not know zero, else it would ask for something
 * this library cannot do. dst's size field becomes @dst_size.
 * Returns 0, or -EINVAL with "@what size ..." in @err (@errlen bytes) for a
 * NULL @src, a size below @min_size, or a non-zero unknown byte.
 */
int abi_copy_in(void *dst, size_t dst_size, const void *src, size_t min_size, const char *what,
		char *err, size_t errlen);

/*
 * Output struct (the library fills @dst, @known bytes of which it knows):
 * check the caller's size is at least @min_size and zero the bytes of a
 * larger (newer) struct beyond @known, so fields this library does not fill
 * read as zero. Returns 0, or -EINVAL with "@what size ..." in @err; nothing
 * is written then.
 */
int abi_prepare_out(void *dst, size_t known, size_t min_size, const char *what, char *err,
		    size_t errlen);

#endif
