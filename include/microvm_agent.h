/*
 * libmicrovm guest agent client - run commands and move files in a guest.
 *
 * An optional module of libmicrovm (same library, own header). It talks to
 * the guest agent `microvm-agent` (guest/agent), which is /init of the
 * default initramfs and listens on vsock port MICROVM_AGENT_PORT. The wire
 * protocol is documented in guest/agent/PROTOCOL.md.
 *
 * Conventions (as in <microvm.h>): functions return 0 or a negative errno;
 * microvm_agent_last_error() gives the detail of the last failure on a
 * connection; nothing prints, exits or installs signal handlers (writes use
 * MSG_NOSIGNAL, so a dead peer gives -EPIPE, not SIGPIPE); structs with a
 * size field follow the rules of <microvm.h> ("Structs that may grow").
 *
 * One connection (microvm_agent) serves one request at a time; it is not
 * thread-safe except for microvm_agent_kill(), which may be called from any
 * thread while microvm_agent_exec() runs. For concurrency open several
 * connections: the agent serves each in its own process.
 *
 * After a transport or protocol failure in the middle of a request (peer
 * closed, timeout, malformed frame) the connection is unusable: later calls
 * return -ENOTCONN. Errors the agent reports (ERROR frames, e.g. -ENOENT for
 * a missing file) leave the connection usable.
 *
 * Quick start:
 *
 *     const char *argv[] = { "uname", "-a", NULL };
 *     microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
 *     int r = microvm_agent_run(vm, argv, 10000, &res);
 *     if (r == 0)
 *             printf("exit %d: %s", res.exit_code, res.out);
 *     microvm_exec_result_free(&res);
 */
#ifndef MICROVM_AGENT_H
#define MICROVM_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "microvm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct microvm_agent microvm_agent;

/* Protocol version spoken by this library: major << 16 | minor. */
#define MICROVM_AGENT_PROTOCOL_VERSION 0x00010002u

/*
 * Connect to the agent of a running VM: microvm_vsock_connect(vm,
 * MICROVM_AGENT_PORT) and wait for the agent's HELLO. While the guest is
 * still booting the connection is refused (or closed before HELLO); that is
 * retried every few milliseconds until @timeout_ms (-1 = no limit) runs out.
 * A connection request the guest does not answer within 2 s, or a stream
 * with no HELLO within 10 s, is also given up and tried again.
 * If the VM has network interfaces and the agent speaks protocol 1.2 or
 * later, the connection then tells it their MAC addresses (NETID), which
 * the agent gives to the guest's interfaces that differ: a clone restored
 * or forked with new addresses uses them from its first command on (one
 * round trip; nothing changes for a VM whose guest already has them).
 * Returns 0 and stores the connection in *@out (free it with
 * microvm_agent_close()), or -EINVAL (NULL argument), -ETIMEDOUT (no agent
 * answered in time), -ENODEV (the VM has no vsock device), -EPROTONOSUPPORT
 * (the agent speaks another major protocol version), -ENOMEM, the agent's
 * error for NETID (e.g. -EPERM), or another error of microvm_vsock_connect().
 * microvm_agent_open_fd() knows no VM and sends no NETID. Safe to call from
 * several threads for the same VM.
 */
MICROVM_API int microvm_agent_connect(microvm *vm, int timeout_ms, microvm_agent **out);

/*
 * Adopt @fd, a connected stream socket to an agent (e.g. one obtained through
 * the VM's Unix socket bridge, or a Unix socket of `microvm-agent --listen`),
 * and wait up to @timeout_ms (-1 = no limit) for the agent's HELLO. The fd is
 * adopted in every case: on failure it has been closed. The fd is switched
 * to non-blocking mode. Returns 0 and stores the connection in *@out, or
 * -EINVAL (@fd < 0 or @out NULL), -ENOTSOCK (not a stream socket),
 * -ETIMEDOUT, -ECONNRESET (closed before HELLO), -EPROTO (not an agent),
 * -EPROTONOSUPPORT (other major version), -ENOMEM.
 */
MICROVM_API int microvm_agent_open_fd(int fd, int timeout_ms, microvm_agent **out);

/* Close the connection (any command still running in the guest is killed by
 * the agent when it sees the connection close). NULL is fine. */
MICROVM_API void microvm_agent_close(microvm_agent *a);

/* Detail of the last failed call on @a, "" if none; valid until the next
 * call on @a. NULL gives "". */
MICROVM_API const char *microvm_agent_last_error(const microvm_agent *a);

/* The agent's protocol version (major << 16 | minor) and its version string
 * from HELLO (owned by @a). */
MICROVM_API uint32_t microvm_agent_protocol(const microvm_agent *a);
MICROVM_API const char *microvm_agent_version(const microvm_agent *a);

/*
 * Timeout in milliseconds for the I/O of requests other than exec (ping,
 * files, reseed, exec start-up): the longest wait without progress before a
 * request fails with -ETIMEDOUT (and the connection becomes unusable).
 * -1 = no limit. Default MICROVM_AGENT_DEFAULT_IO_TIMEOUT_MS. -EINVAL for
 * values below -1.
 */
#define MICROVM_AGENT_DEFAULT_IO_TIMEOUT_MS 30000
MICROVM_API int microvm_agent_set_io_timeout(microvm_agent *a, int timeout_ms);

/* Round trip to the agent. 0 or a negative errno. */
MICROVM_API int microvm_agent_ping(microvm_agent *a);

/* ------------------------------------------------------------------- exec */

/* microvm_exec_config.flags */
#define MICROVM_EXEC_MERGE_ENV 0x1u /* envp is added to the default environment
				     * (same names replaced) instead of
				     * replacing it */

/* Default cap on output collected into a microvm_exec_result, per stream. */
#define MICROVM_EXEC_OUTPUT_MAX (64u * 1024u * 1024u)

/* Streams passed to on_output. */
#define MICROVM_EXEC_STDOUT 1
#define MICROVM_EXEC_STDERR 2

typedef struct microvm_exec_config {
	uint32_t size;  /* sizeof(microvm_exec_config) as the caller knows it */
	uint32_t flags; /* MICROVM_EXEC_* flags */
	/* Command and arguments, NULL-terminated; argv[0] is looked up in the
	 * command's PATH. At most 4096 entries. Borrowed for the call. */
	const char *const *argv;
	/* Environment "NAME=value", NULL-terminated, or NULL for the agent's
	 * default: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin,
	 * HOME=/root, TERM=dumb. Borrowed for the call. */
	const char *const *envp;
	const char *cwd; /* working directory; NULL = "/" */
	/* Standard input: first stdin_len bytes of stdin_data (borrowed), then
	 * everything read from stdin_fd (borrowed, not closed; read until end
	 * of file), then end of file. With stdin_data == NULL and stdin_fd == -1
	 * the command's stdin is /dev/null. */
	const void *stdin_data;
	size_t stdin_len;
	int stdin_fd;
	/* Kill the command (SIGKILL to its process group) after this many
	 * milliseconds and set MICROVM_EXEC_TIMED_OUT; 0 or -1 = no limit. */
	int timeout_ms;
	/* Called with each piece of output (@stream = MICROVM_EXEC_STDOUT or
	 * _STDERR; @data valid during the call only) from the calling thread.
	 * Returning nonzero kills the command (SIGKILL) and sets
	 * MICROVM_EXEC_CANCELLED; later output is dropped. NULL = collect the
	 * output into the result (out/err). */
	int (*on_output)(void *opaque, int stream, const void *data, size_t len);
	void *opaque; /* passed to on_output; borrowed */
	/* Cap on collected output per stream in bytes; 0 = MICROVM_EXEC_OUTPUT_MAX.
	 * Output beyond it is dropped and flagged, the command keeps running. */
	size_t output_limit;
	/* Since 0.4: run as this user instead of root: "name", "uid",
	 * "name:group" or "uid:gid" (at most 256 bytes), resolved in the
	 * guest's /etc/passwd and /etc/group. The primary group is the passwd
	 * entry's (0 for a numeric uid without one) and is the only
	 * supplementary group; HOME becomes the entry's home ("/" without one)
	 * unless envp sets it. NULL = root. An unknown user or group fails the
	 * exec with -ENOENT; an agent older than protocol 1.1 with -EOPNOTSUPP. */
	const char *user;
} microvm_exec_config;

#define MICROVM_EXEC_CONFIG_INIT \
	{ sizeof(microvm_exec_config), 0, NULL, NULL, NULL, NULL, 0, -1, 0, NULL, NULL, 0, NULL }

/* microvm_exec_result.flags */
#define MICROVM_EXEC_TIMED_OUT 0x1u     /* killed because timeout_ms ran out */
#define MICROVM_EXEC_CANCELLED 0x2u     /* killed because on_output returned nonzero */
#define MICROVM_EXEC_OUT_TRUNCATED 0x4u /* stdout exceeded the cap */
#define MICROVM_EXEC_ERR_TRUNCATED 0x8u /* stderr exceeded the cap */
#define MICROVM_EXEC_CORE_DUMPED 0x10u  /* the killing signal dumped core */

typedef struct microvm_exec_result {
	uint32_t size;     /* in: sizeof(microvm_exec_result) as the caller knows it */
	int32_t exit_code; /* 0..255 if the command exited, -1 if killed by a signal */
	int32_t signal;    /* the signal that killed it, else 0 */
	uint32_t flags;    /* MICROVM_EXEC_TIMED_OUT ... */
	/* Collected output (on_output == NULL): malloc'd, NUL-terminated (the
	 * NUL is not counted in the length; output may itself contain NULs),
	 * never NULL after a successful exec. Owned by the caller: free with
	 * microvm_exec_result_free(). NULL when on_output was used. */
	char *out;
	size_t out_len;
	char *err;
	size_t err_len;
	/* Since 0.4, when the command ran to its end (zero with an agent older
	 * than protocol 1.1): its resource use as the guest kernel counted it
	 * (wait4(); includes the descendants it waited for). max_rss_kib is the
	 * peak resident set of its largest process, in KiB. */
	uint64_t max_rss_kib;
	uint64_t user_us, sys_us; /* CPU time in user and kernel mode, microseconds */
} microvm_exec_result;

#define MICROVM_EXEC_RESULT_INIT \
	{ sizeof(microvm_exec_result), 0, 0, 0, NULL, 0, NULL, 0, 0, 0, 0 }

/*
 * Run a command in the guest and wait for it to end. The command runs in a
 * new session and process group with pipes for stdout and stderr (and stdin
 * when given); signals (kill, timeout, cancel) go to the whole process group.
 * The call returns when the command has exited and its output is drained
 * (output of background processes still holding the pipes is read for at
 * most about a second after the command exits).
 *
 * @res must have its size set (see MICROVM_EXEC_RESULT_INIT) and hold no
 * buffers (call microvm_exec_result_free() before reusing it): its fields are
 * overwritten. @cfg and everything it points to are borrowed for the call.
 *
 * Returns 0 when the command ran: @res has the exit code or signal and the
 * flags; this
 * includes commands that failed, were killed or timed out. Otherwise a
 * negative errno and @res holds no allocations:
 *   -EINVAL    bad arguments (no argv, cfg/res size too small, ...)
 *   -E2BIG     too many arguments / the request exceeds the 1 MiB frame
 *   -ENOENT, -EACCES, -ENOEXEC, ...  the agent could not start the command
 *              (e.g. argv[0] not found: -ENOENT, never an exit code 127;
 *              a missing cwd: -ENOENT). The connection stays usable.
 *   -ENOTCONN  the connection is unusable after an earlier failure
 *   -EPIPE, -ECONNRESET  the agent closed the connection (the guest died)
 *   -ETIMEDOUT the agent did not confirm the kill after a timeout
 *   -EPROTO    the agent broke the protocol
 * Details in microvm_agent_last_error().
 */
MICROVM_API int microvm_agent_exec(microvm_agent *a, const microvm_exec_config *cfg,
				   microvm_exec_result *res);

/*
 * Send signal @signo (1..64) to the process group of the command that
 * microvm_agent_exec() is running on @a. May be called from any thread.
 * Returns 0 (the signal is queued and sent at once), -EINVAL (bad signal or
 * NULL), -ESRCH (no command is running on @a).
 */
MICROVM_API int microvm_agent_kill(microvm_agent *a, int signo);

/* Free the output buffers of @res and reset them to NULL/0. NULL is fine. */
MICROVM_API void microvm_exec_result_free(microvm_exec_result *res);

/*
 * Convenience: connect to the VM's agent, run @argv (NULL-terminated) with
 * the default environment, no stdin and collected output, and close. The
 * whole call (connecting included) takes at most about @timeout_ms (0 or -1 =
 * no limit); a command still running then is killed and reported with
 * MICROVM_EXEC_TIMED_OUT. Return values as microvm_agent_connect() and
 * microvm_agent_exec().
 */
MICROVM_API int microvm_agent_run(microvm *vm, const char *const *argv, int timeout_ms,
				  microvm_exec_result *res);

/* ------------------------------------------------------------------ files */

/* Default cap of microvm_agent_get_file(). */
#define MICROVM_AGENT_FILE_MAX (256u * 1024u * 1024u)

/*
 * Write @len bytes of @data (borrowed) to the file @guest_path (absolute path
 * in the guest), created or truncated, with permission bits @mode (e.g. 0644;
 * not masked by the guest's umask). @flags: none defined yet, pass 0.
 * Returns 0, -EINVAL, or the guest's error (-ENOENT: the directory does not
 * exist, -EACCES, -ENOSPC, -EISDIR, ...), or a transport error.
 */
MICROVM_API int microvm_agent_put_file(microvm_agent *a, const char *guest_path,
				       const void *data, size_t len, uint32_t mode,
				       uint32_t flags);

/*
 * Read the file @guest_path of the guest. On success *@data is a malloc'd
 * buffer (owned by the caller: free()) of *@len bytes plus a terminating NUL
 * that is not counted. @max_len caps the size (0 = MICROVM_AGENT_FILE_MAX):
 * a larger file gives -EFBIG (its contents are drained and dropped, the
 * connection stays usable). Errors: -EINVAL, the guest's error (-ENOENT,
 * -EACCES, -EISDIR, ...), transport errors. *@data is NULL on failure.
 */
MICROVM_API int microvm_agent_get_file(microvm_agent *a, const char *guest_path,
				       size_t max_len, void **data, size_t *len);

/*
 * Mix @len bytes (1..4096) of host-provided randomness into the guest's
 * entropy pool (ioctl RNDADDENTROPY on /dev/urandom, crediting 8 bits per
 * byte; if the agent lacks CAP_SYS_ADMIN it falls back to writing them to
 * /dev/urandom, which mixes without crediting). Call it after restoring a
 * snapshot so clones of one snapshot do not share random state. @seed is
 * borrowed. Returns 0, -EINVAL, -E2BIG, or an error.
 */
MICROVM_API int microvm_agent_reseed(microvm_agent *a, const void *seed, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MICROVM_AGENT_H */
