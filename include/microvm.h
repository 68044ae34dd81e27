/*
 * libmicrovm - an embeddable KVM microVM library.
 *
 * This header is the whole public API. It is self-contained: it needs only
 * <stdint.h>, <stddef.h> and "microvm_version.h" (the version macros,
 * generated at build time and installed next to this file).
 *
 * Conventions
 * -----------
 * - Every fallible function returns 0 on success or a negative errno value.
 *   microvm_strerror() turns that into text; microvm_last_error(vm) gives the
 *   detail of the last failed call on that VM ("kernel: not an ELF image: ...").
 * - The library never prints, never exits, never aborts on bad input and never
 *   touches the terminal. Diagnostics go to the callback set with
 *   microvm_set_log().
 * - VMs are independent objects; one process may hold thousands of them.
 *   The only process-wide state is the runtime's thread pools (see
 *   "Process-wide runtime" at the end). Mind RLIMIT_NOFILE; the file
 *   descriptors a VM holds (measured by tests/kvm/test_vm.c):
 *     created (CONFIGURED)        0
 *     running or paused, no devices: 1 + one per vCPU  (the VM fd and the
 *                                 vCPU fds: what KVM needs); /dev/kvm is
 *                                 open only during start/restore; +1 once
 *                                 microvm_event_fd() was called; +1 for a
 *                                 VM restored or forked from a snapshot or
 *                                 a fork parent (the memory file its RAM
 *                                 maps); +1 once reset (/proc/self/pagemap)
 *     every virtio device:        + 1 (interrupt eventfd) + 1 per queue
 *                                 (notify eventfds): rng +2, virtio console
 *                                 +3, disk +2, vsock +4
 *     a disk, from microvm_add_disk on: + 1 (the image), and with the
 *                                 io_uring backend + 2 (ring, completion
 *                                 eventfd)
 *     vsock, once running:        + 1 (the listening Unix socket) + 1 per
 *                                 open stream
 *     a network interface, from microvm_add_net on: + 1 (TAP or socket;
 *                                 +1 pidfd and a passt process for user
 *                                 mode); once running + 3 (irq and 2
 *                                 queue eventfds)
 *     MICROVM_LOOP_EMBEDDER, once running: + 1 (the epoll fd)
 *   The console fds are borrowed and not counted.
 * - A VM object may be used from several threads; calls on one VM are
 *   serialised internally. microvm_destroy() must not race with other calls on
 *   the same VM. microvm_last_error() returns a per-thread copy (see there).
 *   Per function: "Thread safety" below.
 * - Structs that may grow (microvm_disk_config, microvm_vsock_config,
 *   microvm_net_config, microvm_restore_config, microvm_fork_config,
 *   microvm_exit, microvm_net_counters, microvm_runtime_config,
 *   microvm_runtime_counters; in <microvm_agent.h>
 *   microvm_exec_config, microvm_exec_result) start with "uint32_t size",
 *   set to the caller's sizeof by their _INIT macro. Fields are only ever
 *   added at the end, with 0/NULL keeping the earlier behaviour. A size
 *   below the struct's size in the release that introduced it is -EINVAL.
 *   Passed in (configs): a smaller struct from an older header reads as if
 *   the fields it lacks were zero; a larger one from a newer header is
 *   accepted if every byte this library does not know is zero, and is
 *   -EINVAL otherwise (it asks for something this library cannot do).
 *   Filled in (microvm_exit, microvm_exec_result): the library writes the
 *   fields it knows, zeroes the rest of a larger struct and leaves size as
 *   the caller set it.
 * - Ownership of every pointer and file descriptor argument is stated per
 *   function: "copied" (the library keeps its own copy), "borrowed" (the caller
 *   keeps it valid and open until the VM is destroyed) or "adopted" (the
 *   library closes it).
 *
 * Life cycle
 * ----------
 *   microvm_create()  -> CONFIGURED   (setters allowed only here)
 *   microvm_start()   -> RUNNING
 *   microvm_pause()   -> PAUSED,  microvm_resume() -> RUNNING
 *   guest reset/poweroff/crash, internal error, or microvm_stop() -> STOPPED
 *   microvm_destroy() from any state.
 * Calls made in the wrong state return -EBUSY (the VM is running or paused and
 * the call needs a configured VM) or -EINVAL (the call makes no sense in this
 * state, e.g. resume on a VM that is not paused).
 *
 * vCPU kicking
 * ------------
 * To interrupt a vCPU that is inside KVM_RUN (for pause/stop), the library
 * sends a real-time signal to the vCPU thread with pthread_kill(). The signal
 * is MICROVM_DEFAULT_KICK_SIGNAL_OFFSET + SIGRTMIN unless changed with
 * microvm_set_kick_signal(). When a VM starts, if that signal's disposition is
 * SIG_DFL or SIG_IGN, the library installs a no-op handler for it (once; it is
 * never removed). If the application already has a handler for that signal,
 * it is kept and must simply return. vCPU threads have every other signal
 * blocked.
 *
 * Thread safety
 * -------------
 * Different VMs never share state: any call on one VM may run in parallel
 * with any call on another, from any threads (tests/kvm/test_stress.c
 * destroys and creates VMs while other threads pause, resume, snapshot and
 * connect to others). For one VM, per function:
 *
 *  No VM, any thread, any time:
 *    microvm_version, microvm_strerror, microvm_create, microvm_restore
 *    (a snapshot being replaced by microvm_snapshot meanwhile is read whole,
 *    old or new: the replacement is one rename).
 *  Serialised on the VM's API lock (calls on one VM from several threads
 *  run one after the other, in some order; each sees the state the previous
 *  one left, e.g. resume racing pause returns 0 or -EINVAL):
 *    every setter (microvm_set_*, microvm_add_disk, microvm_add_net,
 *    microvm_seccomp_allow: a setter racing microvm_start either applies or
 *    returns -EBUSY), microvm_start, microvm_pause, microvm_resume,
 *    microvm_stop, microvm_snapshot (the lock is held while the files are
 *    written, so other calls on that VM wait for it), microvm_reset,
 *    microvm_fork (on the parent; the child is new), microvm_net_set_link,
 *    microvm_net_stats, microvm_disk_backend, microvm_describe.
 *  Serialised, but not holding the lock while it waits:
 *    microvm_vsock_connect: other calls proceed meanwhile; microvm_stop and
 *    microvm_destroy make a waiting connect return -ECONNRESET, and destroy
 *    waits for it to return (the one call destroy may overlap).
 *  Never blocked by the API lock (they read the run state under its own
 *  short lock), from any thread, several at once:
 *    microvm_wait (any number of threads may wait; all return at the stop),
 *    microvm_state, microvm_event_fd, microvm_last_error, microvm_loop_fd;
 *    microvm_loop_run (it only waits for a snapshot, reset, fork or stop
 *    that is stopping the VM's devices).
 *  microvm_destroy: from any thread (not necessarily the creator's), but it
 *    must not overlap any other call on the same VM, waiting microvm_wait()
 *    and microvm_last_error() included (stop the VM first so that waiters
 *    return), except microvm_vsock_connect() as said; once it has started,
 *    the handle is invalid in every thread. Never from the VM's own log
 *    callback.
 *  Callbacks (the log function) run on library threads, possibly several at
 *  once, and must not call back into the library for the same VM.
 *  Process-wide effects, made thread-safe by the library: the kick signal's
 *  handler and, with seccomp ON, the SIGSYS handler are installed at
 *  start/restore (see there); an application changing those dispositions
 *  concurrently races with that by nature.
 */
#ifndef MICROVM_H
#define MICROVM_H

#include <stddef.h>
#include <stdint.h>

#include "microvm_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MICROVM_BUILDING) && defined(__GNUC__)
#define MICROVM_API __attribute__((visibility("default")))
#else
#define MICROVM_API
#endif

/* ---------------------------------------------------------------- version */

/*
 * MICROVM_VERSION_MAJOR, _MINOR, _PATCH and _STRING ("0.3.0"), the version
 * of this header, come from "microvm_version.h" (included above).
 * MICROVM_VERSION_NUMBER encodes it as (major << 16) | (minor << 8) | patch.
 */
#define MICROVM_VERSION_NUMBER \
	((MICROVM_VERSION_MAJOR << 16) | (MICROVM_VERSION_MINOR << 8) | MICROVM_VERSION_PATCH)

/* The version of the library actually loaded, e.g. "0.3.0" (the same
 * format as MICROVM_VERSION_STRING). Never NULL; the string is static. */
MICROVM_API const char *microvm_version(void);

/* ----------------------------------------------------------------- errors */

typedef struct microvm microvm;

/*
 * Text for a negative errno returned by this library (e.g. -ENOENT).
 * Never NULL; the string is static and thread-safe.
 */
MICROVM_API const char *microvm_strerror(int err);

/*
 * Detail of the last failed call on @vm, whichever thread made it, or "" if
 * none failed yet. Each failure's text is recorded whole: a concurrent
 * failure on another thread replaces it, never mixes with it. The result
 * is a copy in a buffer of the calling thread: it stays valid and unchanged
 * until this thread calls microvm_last_error() again (for any VM) or exits,
 * whatever other threads do meanwhile, @vm's destruction included. With
 * several threads failing calls on one VM, the text read after a failure
 * may be that of another thread's failure which came after it.
 * microvm_last_error(NULL) returns "" (a static string).
 */
MICROVM_API const char *microvm_last_error(const microvm *vm);

/* ---------------------------------------------------------------- logging */

#define MICROVM_LOG_ERROR 1
#define MICROVM_LOG_WARN 2
#define MICROVM_LOG_INFO 3
#define MICROVM_LOG_DEBUG 4

/*
 * Log callback. @msg is a NUL-terminated line without a trailing newline,
 * valid only during the call. It may be called from any library thread
 * (vCPU threads included), so it must be thread-safe and must not call back
 * into the library for the same VM.
 */
typedef void (*microvm_log_fn)(void *opaque, int level, const char *msg);

/*
 * Route messages of level <= @min_level to @fn. @fn == NULL disables logging
 * (the default). @opaque is borrowed. Like every setter, only allowed while
 * the VM is CONFIGURED (-EBUSY otherwise), so no message races a change.
 * Returns 0, or -EINVAL if @vm is NULL or @min_level is out of range.
 */
MICROVM_API int microvm_set_log(microvm *vm, microvm_log_fn fn, void *opaque, int min_level);

/* -------------------------------------------------------------- lifecycle */

/* Limits checked by the setters (KVM's own limits are checked at start). */
#define MICROVM_MAX_VCPUS 254
#define MICROVM_MIN_MEMORY_MIB 2

/*
 * Create a VM object in the CONFIGURED state with 1 vCPU, 128 MiB of RAM, no
 * kernel and no console. Nothing touches /dev/kvm until microvm_start().
 * Returns 0 and stores the VM in *@out, -EINVAL if @out is NULL, -ENOMEM.
 */
MICROVM_API int microvm_create(microvm **out);

/*
 * Number of vCPUs, 1..MICROVM_MAX_VCPUS (and at most what KVM allows; that is
 * checked by microvm_start()). -EINVAL on a bad count, -EBUSY if not
 * CONFIGURED.
 */
MICROVM_API int microvm_set_vcpus(microvm *vm, uint32_t count);

/*
 * Guest RAM in MiB, MICROVM_MIN_MEMORY_MIB..host physical RAM. Memory is
 * allocated lazily (a memfd), so only pages the guest touches cost host RAM.
 * -EINVAL on a bad size, -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_set_memory(microvm *vm, uint64_t mib);

/*
 * Kernel image to boot and its command line. @path must name a readable
 * regular file (checked now; the image itself is parsed by microvm_start()).
 * Supported images: ELF64 x86_64 executables whose PT_LOAD segments lie at or
 * above 1 MiB; they are entered in 64-bit mode with paging on (identity map
 * of the low 4 GiB), interrupts off, CS=0x10, DS/ES/SS=0x18 and RSI pointing
 * at a Linux "struct boot_params" (zero page) that carries the e820 memory
 * map and the command line (the Linux x86 64-bit boot protocol).
 * @cmdline may be NULL (empty); it is limited to MICROVM_MAX_CMDLINE - 1
 * bytes. Both strings are copied.
 * -EINVAL (NULL path, command line too long), -ENOENT/-EACCES/... (file not
 * usable), -EBUSY if not CONFIGURED.
 */
#define MICROVM_MAX_CMDLINE 4096
MICROVM_API int microvm_set_kernel(microvm *vm, const char *path, const char *cmdline);

/*
 * Initial ramdisk loaded next to the kernel; NULL removes it. @path is copied
 * and checked like the kernel's.
 */
MICROVM_API int microvm_set_initrd(microvm *vm, const char *path);

/*
 * Console (the 8250 UART at COM1, IRQ 4; or virtio-console, see
 * microvm_set_console_type): bytes the guest writes go to @out_fd; input
 * read from @in_fd goes into the UART's 16-byte receive FIFO, with a receive
 * interrupt when the guest enabled it (and a transmit-empty interrupt for
 * output), or into the virtio-console's receive buffers. Either may be -1
 * (none). Both are borrowed: the caller keeps them open
 * until the VM is destroyed; they may be blocking or non-blocking. If @out_fd
 * does not accept output (a full pipe), the writing vCPU waits for it, but
 * pause, stop and destroy still complete.
 * -EINVAL (fd < -1 or not open), -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_set_console(microvm *vm, int in_fd, int out_fd);

/* -------------------------------------------------- console type, entropy */

#define MICROVM_CONSOLE_SERIAL 0 /* 16550 UART at COM1 (Linux: console=ttyS0); default */
#define MICROVM_CONSOLE_VIRTIO 1 /* virtio-console, one port (Linux: console=hvc0) */

/*
 * Which device carries the console fds of microvm_set_console(). With
 * MICROVM_CONSOLE_VIRTIO the UART is still there but connected to nothing,
 * and the guest needs CONFIG_VIRTIO_CONSOLE (and console=hvc0 to log there).
 * -EINVAL for an unknown type, -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_set_console_type(microvm *vm, uint32_t type);

/*
 * Give the guest a virtio-rng device fed from the host's getrandom() (Linux:
 * CONFIG_HW_RANDOM_VIRTIO, /dev/hwrng). Off by default. -EBUSY if not
 * CONFIGURED.
 */
MICROVM_API int microvm_set_rng(microvm *vm, int enabled);

/* ------------------------------------------------------------------ disks */

#define MICROVM_DISK_READ_ONLY 0x1u    /* the guest cannot write (VIRTIO_BLK_F_RO) */
#define MICROVM_DISK_BACKEND_SYNC 0x2u /* use the synchronous backend, not io_uring */

typedef struct microvm_disk_config {
	uint32_t size;      /* sizeof(microvm_disk_config) as the caller knows it */
	uint32_t flags;     /* MICROVM_DISK_* */
	const char *path;   /* raw image file; copied. Opened by microvm_add_disk */
	const char *serial; /* device serial (GET_ID), at most 20 bytes; copied; NULL = none */
} microvm_disk_config;

#define MICROVM_DISK_CONFIG_INIT { sizeof(microvm_disk_config), 0, NULL, NULL }

/*
 * Attach a raw disk image as a virtio-blk device (virtio-mmio, described in
 * the ACPI DSDT, or on the kernel command line with ACPI off; the guest sees
 * disks in the order added: /dev/vda, /dev/vdb, ...). The capacity is the file size rounded down to
 * 512-byte sectors. The file is opened now (read-only if the flag says so)
 * and stays open until the VM is destroyed. I/O goes through io_uring unless
 * that is unavailable or MICROVM_DISK_BACKEND_SYNC is set; host I/O errors
 * reach the guest as VIRTIO_BLK_S_IOERR and the VM keeps running.
 * Returns the disk's index (>= 0), or -EINVAL (bad config, file too small),
 * -ENOENT/-EACCES... (file), -ENOSPC (too many devices), -EBUSY if not
 * CONFIGURED.
 */
MICROVM_API int microvm_add_disk(microvm *vm, const microvm_disk_config *cfg);

/* Name of the I/O backend disk @index uses ("io_uring" or "sync"), or NULL
 * for a bad index. The string is static. */
MICROVM_API const char *microvm_disk_backend(const microvm *vm, uint32_t index);

/* ------------------------------------------------------------------ vsock */

/*
 * virtio-vsock (virtio 1.2 section 5.10): stream sockets between the guest
 * (AF_VSOCK, Linux CONFIG_VIRTIO_VSOCKETS) and the host, no network needed.
 * The host side is bridged to Unix domain sockets (the model Firecracker
 * uses) and to an in-process call:
 *
 *  - guest -> host: a guest connecting to CID 2 (the host), port P reaches
 *    the Unix socket "<uds_path>_P", which the embedder listens on. Nobody
 *    listening there: the guest's connect() is refused (RST).
 *  - host -> guest over Unix: connect to <uds_path> (the VM listens on it),
 *    write "CONNECT P\n"; once the guest accepted on port P the VM answers
 *    "OK <host port>\n" and the socket carries the stream; if the guest
 *    refuses, the VM closes the socket.
 *  - host -> guest in process: microvm_vsock_connect() below.
 *
 * Flow control follows the spec's credit scheme in both directions; a guest
 * that stops reading stalls only its own stream, and host-side buffering per
 * stream is bounded.
 * When the VM stops (the guest reset, powered off or crashed, or
 * microvm_stop()), every open stream is reset on the host side: its host
 * peer reads end of file or gets ECONNRESET instead of waiting. This
 * happens as the last vCPU thread ends: just after the VM is seen STOPPED
 * (microvm_wait() may return a moment before), and before
 * microvm_destroy() returns.
 *
 * Who can reach the guest: whoever can connect to <uds_path> can open
 * streams to every port the guest listens on (a guest agent there is a
 * shell in the guest), so the socket is created owner-only (mode 0600,
 * owned by the process's effective user) whatever the umask: it is bound in
 * a new private directory (mode 0700) beside <uds_path>, set to 0600 there
 * and renamed into place in one atomic step, so it is never reachable under
 * a looser mode, not even for an instant. Give access to other users or
 * groups by changing its mode or owner after microvm_start() (or with the
 * directory's). The library never checks a path and then acts on it: an
 * existing file at <uds_path> is replaced only if it is a socket (swapped
 * out atomically, then checked), anything else (a symlink included) fails
 * the start with -EEXIST and is left alone; at destroy the socket is moved
 * out of the directory before it is removed, and only if it is still the
 * one the VM created (a file that replaced it is put back).
 *
 * Where to put the sockets: a directory that only the embedder's user can
 * write (e.g. $XDG_RUNTIME_DIR/<app>/, /run/<app>/ with mode 0700). The
 * library creates <uds_path> safely even in a shared sticky directory such
 * as /tmp, but it CONNECTS to "<uds_path>_P" for the guest's outgoing
 * connections, and in a directory others can write, another user can create
 * that name first and receive the guest's streams. A directory others can
 * write that is not sticky is unsafe for any file.
 */
typedef struct microvm_vsock_config {
	uint32_t size;        /* sizeof(microvm_vsock_config) as the caller knows it */
	uint32_t flags;       /* none defined yet: 0 */
	uint64_t guest_cid;   /* the guest's CID, >= 3 and < 2^32 - 1 */
	const char *uds_path; /* copied; NULL = no Unix socket bridge (in-process
			       * connections only). The VM creates and listens on
			       * it at start (an existing socket file there is
			       * replaced; any other file makes the start fail)
			       * and removes it when destroyed. At most 96 bytes. */
} microvm_vsock_config;

#define MICROVM_VSOCK_CONFIG_INIT { sizeof(microvm_vsock_config), 0, 0, NULL }

/*
 * Give the guest a virtio-vsock device. At most one per VM (a second call
 * replaces the first configuration). -EINVAL for a NULL @cfg, a bad CID,
 * flags or size, or an empty uds_path or one longer than 96 bytes (room is
 * left for the "_P" suffixes in a Unix socket address), -EBUSY if not
 * CONFIGURED.
 *
 * Limits: at most 1024 streams (plus Unix clients still sending their
 * CONNECT line) per VM; beyond that the guest's connect() is refused. Each
 * stream buffers at most 256 KiB of guest data the host side has not read.
 */
MICROVM_API int microvm_set_vsock(microvm *vm, const microvm_vsock_config *cfg);

/*
 * Open a stream to port @port of the guest, from inside the process: returns
 * a connected stream socket fd (AF_UNIX, SOCK_STREAM, close-on-exec; the
 * caller owns it and closes it) once the guest accepted, or a negative
 * errno: -ECONNREFUSED if nothing listens on that port in the guest (the
 * guest answered RST), -ETIMEDOUT if the guest did not answer within
 * @timeout_ms (-1 = no limit; the request is then cancelled),
 * -ECONNRESET if the guest reset its vsock driver or the VM stopped
 * meanwhile, -EAGAIN if the VM already has the maximum number of streams,
 * -ENODEV if the VM has no vsock device, -EINVAL if the VM is not running or
 * paused, @port is 0xffffffff or @timeout_ms < -1. Any thread; while it
 * waits, other calls on the VM (microvm_stop, microvm_destroy) proceed
 * (destroy waits for it to return). Closing the fd shuts the stream down
 * cleanly (the guest sees end of file).
 */
MICROVM_API int microvm_vsock_connect(microvm *vm, uint32_t port, int timeout_ms);

/*
 * The vsock port the guest agent (guest/agent, /init of the default
 * initramfs) listens on. The host side of its protocol is the optional module
 * declared in <microvm_agent.h>.
 */
#define MICROVM_AGENT_PORT 1024

/* ------------------------------------------------------------- networking */

/*
 * virtio-net (virtio 1.2 section 5.1; Linux CONFIG_VIRTIO_NET): one
 * receive/transmit queue pair, a MAC address, link status, mergeable
 * receive buffers, and checksum/TSO offloads when the backend can carry
 * them (a TAP with IFF_VNET_HDR). Backends (microvm_net_config.backend):
 *
 *  MICROVM_NET_BACKEND_TAP_NAME   an existing TAP interface, by name
 *                                 (/dev/net/tun, IFF_TAP | IFF_NO_PI |
 *                                 IFF_VNET_HDR; needs CAP_NET_ADMIN or a
 *                                 TAP owned by the caller). 1 fd.
 *  MICROVM_NET_BACKEND_TAP_FD     a TAP fd the embedder opened (IFF_TAP |
 *                                 IFF_NO_PI; offloads if IFF_VNET_HDR). The
 *                                 fd is duplicated (the caller keeps and
 *                                 closes its own), and O_NONBLOCK is set on
 *                                 the open file they share. 1 fd.
 *  MICROVM_NET_BACKEND_STREAM_FD  a connected SOCK_STREAM socket carrying
 *                                 Ethernet frames each preceded by its
 *                                 length (4 bytes, big-endian): QEMU's
 *                                 stream netdev framing, also passt's and
 *                                 socket_vmnet's. Duplicated, like a TAP fd
 *                                 (its flags are not changed). No offloads.
 *                                 1 fd.
 *  MICROVM_NET_BACKEND_USER       user-mode networking: the library starts
 *                                 passt(1) (Debian package "passt") with
 *                                 --fd on one end of a socketpair; passt
 *                                 gives the guest DHCP, DNS, and NAT to the
 *                                 host's network, and forwards the ports
 *                                 listed in @ports from the host to the
 *                                 guest. No offloads. Costs 1 fd (+1 pidfd)
 *                                 and the passt process, which belongs to
 *                                 the VM: it is killed and reaped by
 *                                 microvm_destroy(), exits by itself when the
 *                                 embedder process dies (its socket closes;
 *                                 any thread may create and destroy the VM).
 *
 * No thread is added: frames move on the VM's event loop thread, transmit
 * when the guest notifies its queue, receive when the backend fd is
 * readable and the guest has buffers (no polling).
 *
 * Host-side buffering per interface is bounded (a stream backend keeps at
 * most two largest frames each way); the library never reads frames the
 * guest has no buffers for. Frames the guest cannot take (link down,
 * buffers too small) and frames the backend refuses are dropped and
 * counted, malformed transmit requests too (microvm_net_stats()); the VM keeps
 * running. Largest frame: 65550 bytes (without the 12-byte virtio header).
 */
#define MICROVM_NET_BACKEND_TAP_NAME 1u
#define MICROVM_NET_BACKEND_TAP_FD 2u
#define MICROVM_NET_BACKEND_STREAM_FD 3u
#define MICROVM_NET_BACKEND_USER 4u

/* microvm_net_config.flags */
#define MICROVM_NET_MAC_SET 0x1u   /* use mac[] (else a random locally
				    * administered unicast address) */
#define MICROVM_NET_LINK_DOWN 0x2u /* start with the link down */

/* microvm_net_port.protocol */
#define MICROVM_NET_TCP 0u
#define MICROVM_NET_UDP 1u

/* A port forward for MICROVM_NET_BACKEND_USER: host port -> guest port. */
typedef struct microvm_net_port {
	uint32_t protocol;   /* MICROVM_NET_TCP or MICROVM_NET_UDP */
	uint16_t host_port;  /* 1..65535, on all host addresses */
	uint16_t guest_port; /* 1..65535 */
} microvm_net_port;

#define MICROVM_NET_MAX_PORTS 64

typedef struct microvm_net_config {
	uint32_t size;     /* sizeof(microvm_net_config) as the caller knows it */
	uint32_t flags;    /* MICROVM_NET_* flags */
	uint32_t backend;  /* MICROVM_NET_BACKEND_* */
	int32_t fd;        /* TAP_FD, STREAM_FD: duplicated (see above); else ignored */
	uint8_t mac[6];    /* with MICROVM_NET_MAC_SET: unicast (bit 0 of mac[0] clear) */
	uint8_t reserved[2]; /* 0 */
	const char *tap_name;   /* TAP_NAME: the interface; copied */
	const char *passt_path; /* USER: passt executable, a path or a name
				 * searched on $PATH; NULL = "passt"; copied */
	const microvm_net_port *ports; /* USER: forwards; copied */
	uint32_t n_ports;              /* at most MICROVM_NET_MAX_PORTS */
	uint32_t reserved2;            /* 0 */
} microvm_net_config;

#define MICROVM_NET_CONFIG_INIT \
	{ sizeof(microvm_net_config), 0, 0, -1, { 0 }, { 0 }, NULL, NULL, NULL, 0, 0 }

/*
 * Add a network interface: a virtio-net device (the guest sees them in the
 * order added: eth0, eth1...) and its backend, opened now: the TAP attached,
 * the fd duplicated, passt started (and checked to be running). Returns the
 * interface's index (>= 0), or -EINVAL (bad size, flags, backend, fd,
 * multicast MAC, name, ports or non-zero reserved fields), -ENODEV (no such
 * TAP interface), -ENOENT (passt not found or not executable), -EINVAL also
 * when passt exits during start-up (bad arguments, a forwarded port in
 * use; its message is in microvm_last_error()), -ETIMEDOUT (passt did not
 * start within 5 s), -ENOSPC (too many devices), -EBUSY if not CONFIGURED.
 * On failure nothing is left open or running.
 */
MICROVM_API int microvm_add_net(microvm *vm, const microvm_net_config *cfg);

/*
 * Clones on the network. A VM restored from a snapshot (or forked) gets, on
 * each interface, a new random locally administered MAC address unless
 * MICROVM_RESTORE_KEEP_MAC (MICROVM_FORK_KEEP_MAC) is given, so that clones
 * on one bridge do not collide; and, if the link was up, a link flap: the
 * first time the guest's driver reads the link status it is down, and up
 * again right after (a config-change interrupt each), so the guest sees a
 * new link (a DHCP client renews its lease). A reset (microvm_reset) keeps
 * both. Linux reads the MAC address from the device only when it probes
 * it: the host's agent client (microvm_agent_connect, agent protocol 1.2)
 * tells the project's guest agent the addresses on each connection, and
 * the agent gives them to the guest's interfaces (addresses, routes and
 * open connections stay), so a clone uses its new address from its first
 * command on. Other guests keep sending from the old address until they
 * set it themselves (microvm_net_mac() gives it).
 */

/*
 * The MAC address of interface @index (as the device offers it to the
 * guest) in @mac. -EINVAL (NULL arguments), -ENODEV (no such interface).
 * Any state. Since 0.5.
 */
MICROVM_API int microvm_net_mac(const microvm *vm, uint32_t index, uint8_t mac[6]);

/*
 * Set the link of interface @index up (@up != 0) or down, on a running or
 * paused VM (the guest sees VIRTIO_NET_S_LINK_UP change and gets a config
 * interrupt; while down, frames either way are dropped and counted) or a
 * configured one (the state it starts with). A backend that dies (peer
 * closed the socket, passt exited) takes the link down by itself.
 * -EINVAL (NULL vm, stopped VM), -ENODEV (no such interface).
 */
MICROVM_API int microvm_net_set_link(microvm *vm, uint32_t index, int up);

typedef struct microvm_net_counters {
	uint32_t size;         /* in: sizeof(microvm_net_counters) as the caller knows it */
	uint32_t link_up;      /* 1 or 0 */
	uint64_t rx_packets;   /* frames given to the guest */
	uint64_t rx_bytes;     /* their bytes (Ethernet frames, no virtio header) */
	uint64_t rx_dropped;   /* frames from the backend the guest did not get */
	uint64_t tx_packets;   /* frames the guest sent that the backend took */
	uint64_t tx_bytes;
	uint64_t tx_dropped;   /* well-formed frames lost (link down, backend error) */
	uint64_t tx_malformed; /* transmit requests refused as malformed */
} microvm_net_counters;

#define MICROVM_NET_COUNTERS_INIT { sizeof(microvm_net_counters), 0, 0, 0, 0, 0, 0, 0, 0 }

/*
 * Counters of interface @index since the VM was started or restored (zero
 * before). Fills @out as microvm_wait() fills microvm_exit. -EINVAL (NULL
 * arguments, size too small), -ENODEV (no such interface). Any state.
 */
MICROVM_API int microvm_net_stats(const microvm *vm, uint32_t index, microvm_net_counters *out);

/*
 * ACPI tables (default on): RSDP/XSDT/FADT (hardware-reduced)/MADT/DSDT, so
 * kernels find all vCPUs without CONFIG_X86_MPPARSE, power off through ACPI,
 * and find virtio devices in the DSDT. With ACPI off the guest gets only the
 * MP table, and virtio devices are announced on the kernel command line
 * (virtio_mmio.device=4K@0xADDR:IRQ, needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES):
 * use that for kernels built without CONFIG_ACPI. -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_set_acpi(microvm *vm, int enabled);

/*
 * The i8254 PIT (default: on). Off, the machine has no PIT: KVM then starts
 * no PIT worker thread for the VM (a host kernel thread per VM otherwise),
 * and creating and tearing the VM down costs less (docs/performance.md: a
 * fifth to a third more VMs created and destroyed per second). The guest gets
 * the local APIC's TSC-deadline timer in its CPUID instead (if KVM has
 * it), which Linux uses without calibrating against a PIT; the PIT's ports
 * read as all ones. For guests that need no PIT: Linux with kvmclock (any
 * x86_64 kernel of the last decade) and the tiny payloads. Kept in
 * snapshots. -EBUSY if not CONFIGURED. Since 0.9.
 */
MICROVM_API int microvm_set_pit(microvm *vm, int enabled);

#define MICROVM_DEFAULT_KICK_SIGNAL_OFFSET 6
/*
 * Signal used to kick vCPU threads (see "vCPU kicking" above); must be in
 * SIGRTMIN..SIGRTMAX. -EINVAL otherwise, -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_set_kick_signal(microvm *vm, int signo);

/*
 * seccomp on the library's own threads (since 0.4). With a mode other than
 * OFF, each thread the library creates for this VM (its vCPU threads and its
 * event-loop thread) installs, first thing, a seccomp filter on itself only
 * (with PR_SET_NO_NEW_PRIVS on itself only): the embedder's threads, and
 * threads it creates later, are never filtered. A filter stays on its thread
 * until the thread ends (with the VM, or for the event loop, at a snapshot,
 * which restarts it).
 *
 * The filter admits what those threads need, per thread kind; the list, with
 * why each entry is there, is in lib/vm_seccomp.c. In short: I/O on fds the
 * VM already holds (read/write/readv/writev/pread64/pwrite64/preadv/pwritev
 * (+2), fsync, fdatasync, fallocate, io_uring_enter, sendmsg/recvmsg/sendto/
 * recvfrom, shutdown, getsockopt, fcntl, close, poll/ppoll), threads and
 * locks (futex, rt_sigreturn, rt_sigprocmask, restart_syscall, sched_yield,
 * nanosleep/clock_nanosleep, clock_gettime, gettid, getpid, exit, tgkill with
 * the VM's kick signal only), memory (brk, munmap, mremap, madvise; mmap and
 * mprotect without PROT_EXEC), sigaltstack, sched_getaffinity; ioctl with
 * these requests only: KVM_RUN (vCPU threads), KVM_GET_REGS, KVM_GET_SREGS,
 * KVM_TRANSLATE, KVM_IRQ_LINE(_STATUS), KVM_IRQFD, KVM_IOEVENTFD, BLKDISCARD,
 * BLKZEROOUT; and on the event-loop thread epoll_wait/epoll_pwait/epoll_ctl,
 * accept4, connect and socket(AF_UNIX) (the vsock Unix socket bridge). No
 * open/openat, execve, fork/clone, no new sockets other than AF_UNIX.
 *
 * Callbacks the library makes on these threads (the log callback set with
 * microvm_set_log) run under the filter: a callback that needs more (e.g.
 * opening a file) must have it added with microvm_seccomp_allow().
 *
 * Modes:
 *   MICROVM_SECCOMP_OFF           no filter (default).
 *   MICROVM_SECCOMP_ON            a forbidden call is trapped (SECCOMP_RET_TRAP):
 *       it fails with EPERM and the VM stops with MICROVM_EXIT_INTERNAL_ERROR,
 *       error -EPERM and a message such as "seccomp: the event-loop thread
 *       made a forbidden system call: openat (257)". This needs a SIGSYS
 *       handler: each start (or restore) of a VM in this mode installs it,
 *       process-wide, unless SIGSYS already leads to it; it is never
 *       removed. Every SIGSYS that is not a seccomp trap on a library thread
 *       goes on to the disposition it replaced (the application's handler,
 *       or the default action). If the application replaces it while such a
 *       VM runs, that VM's forbidden calls reach the application's handler
 *       instead (and are not reported; with SIG_DFL the process dies).
 *   MICROVM_SECCOMP_KILL_PROCESS  a forbidden call kills the whole process
 *       (SECCOMP_RET_KILL_PROCESS): the strictest, for a process per VM.
 *   MICROVM_SECCOMP_LOG           nothing is stopped; the kernel logs each
 *       forbidden call (SECCOMP_RET_LOG: dmesg / the audit log): to find what
 *       an application's callbacks need before turning the filter ON.
 * -EINVAL for an unknown mode, -EBUSY if not CONFIGURED. The filter is built
 * with libseccomp at microvm_start (its errors are start errors).
 */
#define MICROVM_SECCOMP_OFF 0
#define MICROVM_SECCOMP_ON 1
#define MICROVM_SECCOMP_KILL_PROCESS 2
#define MICROVM_SECCOMP_LOG 3
MICROVM_API int microvm_set_seccomp(microvm *vm, uint32_t mode);

/*
 * Allow system call number @nr (the host's native numbering, e.g. SYS_openat
 * from <sys/syscall.h>) with any arguments on every library thread of this VM,
 * in addition to the built-in list. Up to 64 per VM. -EINVAL for a negative
 * or unknown number, -ENOSPC past 64, -EBUSY if not CONFIGURED.
 */
MICROVM_API int microvm_seccomp_allow(microvm *vm, int32_t nr);

/*
 * Build the VM (open /dev/kvm, check capabilities, allocate RAM, load the
 * kernel, create vCPUs) and start running it. Returns once the vCPU threads
 * run (named "vcpu<N>", N the vCPU index, as ps and top -H show them); the
 * guest runs in the background. On failure nothing of the VM is left
 * running, the VM stays CONFIGURED and microvm_last_error() says why.
 * -EBUSY if already started (running or paused), -EINVAL if stopped or no
 * kernel is set; -ENOENT/-EACCES when /dev/kvm is missing/not accessible,
 * -ENOEXEC for an image that is not a supported kernel, -ENOMEM, -EMFILE
 * (see the file descriptor counts above), -EAGAIN if creating the KVM VM
 * was interrupted by signals or task work on the calling thread many times
 * in a row (one interruption is retried inside; calling again is fine),
 * other negative errno from KVM.
 */
MICROVM_API int microvm_start(microvm *vm);

/*
 * Pause all vCPUs; returns when none of them runs guest code. Pausing a
 * paused VM succeeds and does nothing. -EINVAL if the VM is not running
 * (configured or stopped, including a guest that stopped while pausing).
 */
MICROVM_API int microvm_pause(microvm *vm);

/* Resume a paused VM. -EINVAL if it is not paused. */
MICROVM_API int microvm_resume(microvm *vm);

/*
 * A report on a paused or stopped VM, for people chasing a hang or a crash
 * (since 0.8): for each vCPU its run state (runnable, halted, ...), where it
 * is (rip, rsp, rflags, cr0, cr3, cr4, efer), the events KVM holds for it,
 * its local APIC's requested (irr), in-service (isr) and level (tmr)
 * vectors and its timer; for each virtio device its status, interrupt
 * status and negotiated features, and for each ready queue the device's
 * indices (next avail, used, last signalled) beside the driver's (avail
 * index, flags, used_event; the device's avail_event). Plain text, one
 * line per item, written into @buf (@len bytes, NUL-terminated, cut to fit
 * as snprintf cuts). The format is for people and may change. Returns the
 * length of the whole report (as snprintf: call again with a larger buffer
 * if it is >= @len), -EINVAL for a NULL @vm, or @buf NULL with @len > 0,
 * -EBUSY if the VM is running or its vCPUs have not all parked or ended
 * yet (pause it first: a running vCPU's state cannot be read), -EINVAL if
 * it was never started.
 */
MICROVM_API int microvm_describe(microvm *vm, char *buf, size_t len);

/*
 * Stop a running or paused VM: all vCPU threads end and the VM becomes
 * STOPPED with exit reason MICROVM_EXIT_STOPPED (unless the guest had already
 * stopped it for another reason, which is kept). Stopping a stopped VM
 * succeeds. -EINVAL if the VM was never started.
 */
MICROVM_API int microvm_stop(microvm *vm);

/* Why a VM stopped (microvm_exit.reason). */
#define MICROVM_EXIT_NONE 0           /* not stopped yet */
#define MICROVM_EXIT_RESET 1          /* the guest asked for a reset/reboot */
#define MICROVM_EXIT_POWEROFF 2       /* the guest powered off */
#define MICROVM_EXIT_CRASH 3          /* triple fault / guest-reported crash */
#define MICROVM_EXIT_INTERNAL_ERROR 4 /* KVM or the VMM failed; see message */
#define MICROVM_EXIT_STOPPED 5        /* microvm_stop() or microvm_destroy() */

#define MICROVM_EXIT_MESSAGE_MAX 256

typedef struct microvm_exit {
	uint32_t size;   /* in: sizeof(microvm_exit) as the caller knows it */
	uint32_t reason; /* MICROVM_EXIT_* */
	int32_t error;   /* negative errno for INTERNAL_ERROR, else 0 */
	uint32_t vcpu;   /* index of the vCPU that stopped the VM */
	/* Human-readable detail, e.g. the KVM exit data and instruction bytes. */
	char message[MICROVM_EXIT_MESSAGE_MAX];
} microvm_exit;

/* Fill @out->size with this before calling microvm_wait(). */
#define MICROVM_EXIT_INIT { sizeof(microvm_exit), 0, 0, 0, { 0 } }

/*
 * Wait until the VM is STOPPED, at most @timeout_ms milliseconds (-1 = no
 * limit, 0 = just poll). On success fills @out (if not NULL; out->size must
 * be set, see MICROVM_EXIT_INIT) and returns 0. -ETIMEDOUT if still running,
 * -EINVAL if the VM was never started, @timeout_ms < -1 or out->size is
 * below 272 (the 0.1 struct; see "Structs that may grow" above).
 */
MICROVM_API int microvm_wait(microvm *vm, int timeout_ms, microvm_exit *out);

/*
 * A file descriptor that becomes readable whenever the VM changes state
 * (started, paused, resumed, stopped), for poll/epoll users. Owned by the VM:
 * do not close it; read 8 bytes from it to clear it (it is an eventfd).
 * Made by the first call (a VM nobody asks holds no such fd); readable at
 * once if the VM left CONFIGURED before that. Returns the fd (>= 0), -EINVAL,
 * or -EMFILE/-ENFILE from that first call.
 */
MICROVM_API int microvm_event_fd(const microvm *vm);

/*
 * Device work on the embedder's own event loop (since 0.7).
 *
 * By default a VM's device work (console input, queue notifications, disk
 * completions, vsock and network sockets) runs on the library's shared
 * event threads ("Process-wide runtime" below). With MICROVM_LOOP_EMBEDDER,
 * set before microvm_start, it runs only inside microvm_loop_run(), on the
 * thread that calls it: poll microvm_loop_fd() (readable when there is
 * work) from your loop and call microvm_loop_run(vm, 0) when it is. The
 * vCPU threads are the library's either way, so the guest runs on its own;
 * only its I/O waits for your loop. A VM restored or forked with
 * MICROVM_RESTORE_EMBEDDER_LOOP / MICROVM_FORK_EMBEDDER_LOOP is the same.
 *
 * Mind what waits for the guest's devices: microvm_vsock_connect and the
 * agent calls (<microvm_agent.h>) return only once the guest answered,
 * which needs the loop to run meanwhile on another thread. Snapshot, reset,
 * fork and stop may run while another thread is in microvm_loop_run (they
 * wait for the handlers it is running). With seccomp on, the vCPU threads
 * are filtered as usual but the device work is not: it runs on your thread,
 * under whatever that thread is allowed.
 *
 * microvm_set_event_loop: MICROVM_LOOP_SHARED (default) or
 * MICROVM_LOOP_EMBEDDER. -EINVAL for another mode, -EBUSY if not CONFIGURED.
 *
 * microvm_loop_fd: an fd (an epoll fd) that polls readable while device work
 * is ready. Owned by the VM: do not close or read it; valid until
 * microvm_destroy. -EINVAL if the VM does not use MICROVM_LOOP_EMBEDDER or
 * was not started.
 *
 * microvm_loop_run: run the VM's ready device work, first waiting up to
 * @timeout_ms for some (0: do not wait, -1: no limit). Returns how many
 * ready events it took (0 if none was ready, or a signal interrupted the
 * wait), or -EINVAL as microvm_loop_fd. Any thread, several at once (they take turns);
 * not from the VM's log callback. It must not overlap microvm_destroy.
 */
#define MICROVM_LOOP_SHARED 0
#define MICROVM_LOOP_EMBEDDER 1
MICROVM_API int microvm_set_event_loop(microvm *vm, uint32_t mode);
MICROVM_API int microvm_loop_fd(const microvm *vm);
MICROVM_API int microvm_loop_run(microvm *vm, int timeout_ms);

/* States returned by microvm_state(). */
#define MICROVM_STATE_CONFIGURED 0
#define MICROVM_STATE_RUNNING 1
#define MICROVM_STATE_PAUSED 2
#define MICROVM_STATE_STOPPED 3

/* Current state (MICROVM_STATE_*), or -EINVAL for NULL. */
MICROVM_API int microvm_state(const microvm *vm);

/* --------------------------------------------------- snapshot and restore */

/*
 * A snapshot is a directory with two files: "memory" (guest RAM, sparse:
 * zero pages are holes) and "state.dtb" (everything else, a flattened device
 * tree: format version, library version, machine configuration, per-vCPU
 * registers/FPU/XSAVE/MSRs/LAPIC/events/CPUID, irqchip, PIT, KVM clock, and
 * per-device registers and queue state, with a CRC-32C over the state and
 * one over the memory contents).
 *
 * What is NOT captured: the contents of disk images (a disk is referenced
 * by path; give a restored VM an image with the content it had at snapshot
 * time, e.g. a copy taken while the VM was paused), open vsock streams
 * (in a restored VM the guest's sockets for them get an RST on their next
 * packet; listening sockets are unaffected), console output not yet written
 * to the console fd, frames in flight on network interfaces, and the host
 * fds (a network interface's backend is reopened as configured, see
 * microvm_restore_config.net_fds).
 *
 * Restore requires: the same snapshot format version (the state file's
 * "format-version"; any library reading that format restores it, whatever
 * library version wrote it, which the file records for information only), a
 * host whose KVM accepts the saved CPUID and MSRs (same CPU model and
 * features) and allows the saved vCPU count.
 *
 * Clocks: a snapshot records the guest's kvmclock and, right after it, vCPU
 * 0's TSC and every vCPU's TSC offset relative to vCPU 0's; restore sets the
 * clock and all TSCs together as the last step before the vCPUs run
 * (KVM_VCPU_TSC_OFFSET, Linux 5.16 or later), so a clone's TSCs agree with
 * each other and with kvmclock as they did in the parent. Snapshots from
 * earlier versions, and kernels without that attribute, restore each TSC
 * from the value read at another moment: the TSCs of a clone then differ by
 * up to milliseconds, a Linux guest's clocksource watchdog can mark the TSC
 * unstable, and with Linux 6.1 guests that was seen to wedge a clone's vCPU
 * now and then (4 of about 90 clones in the emulated test machine). Until
 * long clone runs confirm the wedge is gone, boot guests that will be
 * snapshotted with "tsc=reliable" (the sandbox tool and the Python Sandbox
 * do). See docs/notes-warm-start.md.
 *
 * Files: the snapshot directory is created with mode 0700 and its files with
 * 0600, exactly, whatever the umask (the memory file holds everything the
 * guest had in RAM: keys, tokens). It is built in a new temporary directory
 * beside @dir ("." + its name + ".tmp-XXXXXX", mode 0700) and renamed into
 * place; files are created with O_EXCL | O_NOFOLLOW. Put snapshots in a
 * directory only the embedder's user can write; loosen modes afterwards if
 * other users must restore them. Restoring reads whatever the directory
 * holds (see Trust below), so a snapshot directory others can write is a
 * way into the VM.
 *
 * Trust: the checksums catch corruption, not tampering (anyone who can edit
 * the files can recompute them). Restore checks every value it takes from
 * the state file against what the device model can hold (register indexes,
 * FIFO and queue sizes, ring addresses inside guest RAM, the machine
 * configuration through the same checks as the setters; vCPU and irqchip
 * state through KVM's own checks), refuses files that are not regular files
 * (a FIFO does not block it), and bounds diff chains. So an edited snapshot
 * gives at worst a restore error or a guest that misbehaves inside its own
 * VM, not corruption of the host process. It is trusted input beyond that:
 * it decides what the guest runs and can see, the disk image paths and the
 * vsock socket path the VM opens (override them in microvm_restore_config),
 * and a diff snapshot names its base directory by absolute path, whose files
 * restore then reads as guest RAM. Restore snapshots from sources you would
 * let choose those.
 */

/* microvm_snapshot() flags */
#define MICROVM_SNAPSHOT_DIFF 1u /* write only the RAM pages changed since the
				  * last snapshot this VM took or was restored
				  * from (its "base"); restore layers it on the
				  * base, which must stay where it is */

/*
 * Write a snapshot of a PAUSED VM to directory @dir (created; its parent must
 * exist). Atomic: the snapshot is built in a temporary directory next to
 * @dir and renamed into place at the end; if anything fails (ENOSPC, EIO...)
 * an existing snapshot at @dir is left intact, nothing partial remains, and
 * the VM is still paused and can be resumed. The VM stays PAUSED.
 * -EINVAL if the VM is not paused or flags are unknown, -ENOENT for
 * MICROVM_SNAPSHOT_DIFF without a base, file errors as negative errno.
 * Taking a snapshot starts dirty-page tracking for later diff snapshots (the
 * guest then pays a write-protect fault on the first write to each page).
 * A full snapshot becomes the VM's microvm_reset() target (a diff snapshot
 * leaves it without one).
 */
MICROVM_API int microvm_snapshot(microvm *vm, const char *dir, uint32_t flags);

/* microvm_restore_config.flags */
#define MICROVM_RESTORE_PAUSED 1u        /* leave the VM paused (default: running) */
#define MICROVM_RESTORE_VERIFY_MEMORY 2u /* read the whole memory file and check its
					  * checksum first (costs a full read) */
#define MICROVM_RESTORE_PREFAULT 4u      /* map all saved (non-zero) pages up front
					  * instead of on first touch */
#define MICROVM_RESTORE_TRACK_DIRTY 8u   /* track dirty pages from the start, so a
					  * MICROVM_SNAPSHOT_DIFF can use this
					  * snapshot as its base */
#define MICROVM_RESTORE_KEEP_MAC 16u     /* since 0.5: network interfaces keep their
					  * saved MAC addresses (default: each gets
					  * a new random one, see "Clones on the
					  * network" above microvm_add_net) */
#define MICROVM_RESTORE_EMBEDDER_LOOP 32u /* since 0.7: device work on the caller's loop
					    * (microvm_set_event_loop) */

#define MICROVM_RESTORE_MAX_DISKS 16

typedef struct microvm_restore_config {
	uint32_t size;  /* sizeof(microvm_restore_config) as the caller knows it */
	uint32_t flags; /* MICROVM_RESTORE_* */
	int console_in;  /* borrowed, -1 = none (the console is not saved) */
	int console_out; /* borrowed, -1 = none */
	/* Disk image paths replacing the saved ones (index = disk index; NULL
	 * or beyond n_disks = keep the saved path). Copied. The image must have
	 * the saved size. Give each clone its own copy: writes land there. */
	uint32_t n_disks;
	const char *const *disk_paths;
	/* vsock for this clone: 0 / NULL = keep the saved ones. Give each
	 * clone its own uds_path (a clone listens on it and would take over
	 * its parent's). A different CID reaches the guest through a vsock
	 * TRANSPORT_RESET event. With Linux 6.1 guests, a program blocked in
	 * poll() on a listening vsock socket was seen not to be woken for new
	 * connections after that event (the guest agent polls with a timeout
	 * and is not affected). The CID is private to the VM anyway (host
	 * sockets are per VM): keeping it (the default) sends no event. */
	uint64_t vsock_cid;
	const char *vsock_uds_path;
	/* Since 0.3; 0 / NULL = the defaults, which callers built against 0.2
	 * get. A restored VM is already running, so its setters are closed:
	 * these are the only way to give it a log callback or kick signal.
	 * Logging as microvm_set_log(), from the VM's creation during the
	 * restore on: log_fn NULL = none; log_opaque borrowed; log_level
	 * MICROVM_LOG_*, 0 = MICROVM_LOG_WARN. */
	microvm_log_fn log_fn;
	void *log_opaque;
	int32_t log_level;
	/* Signal that kicks its vCPU threads, as microvm_set_kick_signal();
	 * 0 = the default (see "vCPU kicking"). */
	int32_t kick_signal;
	/* Since 0.4. Network interfaces whose backend was an fd
	 * (MICROVM_NET_BACKEND_TAP_FD or _STREAM_FD) cannot be reopened from
	 * the snapshot: give this clone its fd here (index = interface index;
	 * duplicated as by microvm_add_net). An fd interface without one
	 * (NULL, beyond n_net_fds, or -1) makes the restore fail with -EINVAL;
	 * entries for other interfaces must be -1. Other interfaces are
	 * reopened as saved (the TAP by name; a new passt with the same port
	 * forwards). Each interface gets a new MAC address unless
	 * MICROVM_RESTORE_KEEP_MAC; its link state is kept (see "Clones on
	 * the network"). */
	uint32_t n_net_fds; /* at most MICROVM_RESTORE_MAX_NETS */
	uint32_t reserved;  /* 0 */
	const int32_t *net_fds;
	/* Since 0.4: MICROVM_SECCOMP_* for the restored VM's threads, as
	 * microvm_set_seccomp() (0 = OFF). */
	uint32_t seccomp;
	uint32_t reserved2; /* 0 */
} microvm_restore_config;

#define MICROVM_RESTORE_MAX_NETS 16

#define MICROVM_RESTORE_CONFIG_INIT \
	{ sizeof(microvm_restore_config), 0, -1, -1, 0, NULL, 0, NULL, NULL, NULL, 0, 0, 0, 0, NULL, \
	  0, 0 }

/*
 * Create a new VM from the snapshot in @dir and start it (running, or paused
 * with MICROVM_RESTORE_PAUSED). Guest RAM maps the memory file copy-on-write
 * and lazily, so restoring the same snapshot N times gives N independent
 * clones sharing the pages none of them changed. Each restored VM gets a new
 * VM generation ID: with ACPI (the default) the DSDT has a VM generation
 * counter device (_CID "VM_GEN_COUNTER", Microsoft's "Virtual Machine
 * Generation ID"; Linux CONFIG_VMGENID) whose 16-byte ID is replaced by
 * random bytes on restore, reset and fork, with an ACPI notification (a
 * Generic Event Device interrupt, GSI 23) on which a Linux guest rereads it
 * and reseeds its RNG, so clones do not share random numbers. @cfg may be NULL (defaults).
 * On success *@out is the new VM (destroy it with microvm_destroy). On
 * failure *@out is NULL, nothing is left behind, and the error is returned:
 * -ENOENT (no such snapshot), -EINVAL (not a snapshot, unsupported format
 * version, missing or malformed state, memory file too short, more vCPUs
 * than this host allows, a disk of the wrong size, a state or memory file
 * that is not a regular file, a bad log level or kick signal...), -EBADMSG
 * (checksum mismatch), -EAGAIN and the other errors of microvm_start(). The
 * detail is in @errbuf (if not NULL, @errlen bytes) since there is no VM to
 * ask microvm_last_error().
 */
MICROVM_API int microvm_restore(microvm **out, const char *dir, const microvm_restore_config *cfg,
				char *errbuf, size_t errlen);

/* microvm_reset() flags */
#define MICROVM_RESET_PAUSED 1u /* leave the VM paused (default: running) */

/*
 * Return a running or paused VM, in place, to the snapshot it was restored
 * from or last took with microvm_snapshot() (its "reset target"): vCPU,
 * irqchip, PIT and clock state and every device's state are reloaded from
 * that snapshot's state (kept in memory), virtio devices are reset first
 * (in-flight I/O completes, open vsock streams are closed on the host side:
 * the guest's sockets for them get an RST), and the guest pages written
 * since are dropped so that they read the snapshot's contents again. The
 * KVM VM, vCPU threads, devices and fds are kept: nothing is re-created.
 * The guest then gets a new VM generation ID (see microvm_restore).
 * Afterwards the VM runs, or stays paused with MICROVM_RESET_PAUSED.
 *
 * Cost: the pages written since the last reset, not the size of RAM: they
 * are the private copy-on-write pages of RAM's mapping, found by walking the
 * process's page tables (PAGEMAP_SCAN, Linux 6.7, which skips the
 * unpopulated parts; older kernels read /proc/self/pagemap, 8 bytes per page
 * of RAM) and dropped with one madvise() per run of them (runs less than 64
 * pages apart together); no dirty log is kept for it. Plus reloading the
 * vCPUs: seven vCPU ioctls each (registers, special registers and events go
 * through the vCPU's kvm_run, KVM_CAP_SYNC_REGS, and are taken by its next
 * KVM_RUN), and a few VM-wide ones.
 * A VM that took the snapshot itself still has its RAM in its own memfd: its
 * first reset maps RAM copy-on-write over the snapshot's memory file (as if
 * restored from it; the memfd is freed), so that snapshot must still be in
 * its directory then (-EINVAL if it was removed or replaced; nothing is
 * changed then), and from then on the file must not be written in place
 * (deleting or replacing the directory is fine: the mapping keeps the file).
 *
 * Disks are not touched: a guest's writes to a disk image since the
 * snapshot stay. To roll a scratch disk back too, give the VM a copy taken
 * at snapshot time (e.g. `cp --reflink=auto`) and copy it back (or swap it
 * while paused) before resetting. The console's unwritten output is lost.
 *
 * -EINVAL: unknown flags, a VM that is configured or stopped, or one with
 * no reset target (never snapshotted nor restored, restored from or last
 * took a MICROVM_SNAPSHOT_DIFF snapshot); microvm_last_error() says which.
 * -EACCES if the process cannot open /proc/self/pagemap (which reset reads
 * to find the written pages): a process that made itself non-dumpable
 * (PR_SET_DUMPABLE 0) and runs as a non-root user cannot.
 * If loading the saved state fails (it should not), the VM is stopped with
 * MICROVM_EXIT_INTERNAL_ERROR and the error is returned.
 */
MICROVM_API int microvm_reset(microvm *vm, uint32_t flags);

/* microvm_fork_config.flags */
#define MICROVM_FORK_PAUSED 1u /* leave the child paused (default: running) */
#define MICROVM_FORK_KEEP_MAC 2u /* since 0.5: as MICROVM_RESTORE_KEEP_MAC */
#define MICROVM_FORK_EMBEDDER_LOOP 4u /* since 0.7: as MICROVM_RESTORE_EMBEDDER_LOOP */

/* The child's identity and host connections; the layout mirrors
 * microvm_restore_config's, with the same meaning per field. Since 0.4. */
typedef struct microvm_fork_config {
	uint32_t size;   /* sizeof(microvm_fork_config) as the caller knows it */
	uint32_t flags;  /* MICROVM_FORK_* */
	int console_in;  /* borrowed, -1 = none */
	int console_out; /* borrowed, -1 = none */
	/* Disk image paths for the child (index = disk index; NULL or beyond
	 * n_disks = the parent's image). Copied. Same size as the parent's.
	 * A writable disk shared with the parent gets both VMs' writes: give
	 * the child its own copy. */
	uint32_t n_disks;
	const char *const *disk_paths;
	/* vsock: 0 = the parent's CID (private to each VM anyway). The child
	 * needs its own uds_path if the parent has one (-EINVAL otherwise);
	 * copied. */
	uint64_t vsock_cid;
	const char *vsock_uds_path;
	microvm_log_fn log_fn; /* as microvm_restore_config */
	void *log_opaque;
	int32_t log_level;
	int32_t kick_signal;
} microvm_fork_config;

#define MICROVM_FORK_CONFIG_INIT \
	{ sizeof(microvm_fork_config), 0, -1, -1, 0, NULL, 0, NULL, NULL, NULL, 0, 0 }

/*
 * Fork a PAUSED VM: *@child becomes a new VM with the parent's vCPU, device
 * and memory state, running (or paused with MICROVM_FORK_PAUSED), and the
 * parent stays paused. Nothing is written to disk: guest RAM is shared
 * copy-on-write. A parent whose RAM is its own memfd (booted, never
 * snapshotted) has it remapped private copy-on-write over that memfd, which
 * from then on holds the RAM as of the first fork; the child maps the same
 * file privately; pages the parent already holds privately (written since
 * its RAM was mapped from a snapshot or since an earlier fork) are copied
 * into the child. Parent and child then diverge independently; forks of
 * forks work the same way. The child gets a new VM generation ID (the
 * parent keeps its own), no diff-snapshot base, and the parent's reset
 * target if it has one.
 * The child's threads run under the parent's seccomp setting
 * (microvm_set_seccomp, microvm_seccomp_allow). What is not carried over:
 * open vsock streams (as for a restore), unread console input, the
 * parent's log callback and kick signal (set them in @cfg). @cfg may be NULL only if the parent has no vsock Unix socket.
 * -EINVAL (parent not paused, bad @cfg, child == NULL), the errors of
 * microvm_restore (with the message on the parent: microvm_last_error).
 */
MICROVM_API int microvm_fork(microvm *parent, microvm **child, const microvm_fork_config *cfg);

/*
 * Destroy the VM in any state: stop it if needed, free everything. NULL is
 * fine. It does not wait for the kernel's slow VM teardown (~16 ms): unmapping
 * guest RAM and closing the KVM file descriptors is queued for the process's
 * teardown threads (see "Process-wide runtime"). When that queue already
 * holds teardown_backlog VMs, destroy does the teardown itself, so a process
 * that destroys faster than the kernel tears down is slowed instead of
 * piling up VMs. Exiting the process meanwhile is fine. Tools that stop
 * every thread with ptrace at exit (LeakSanitizer) can deadlock with a
 * teardown in flight: under them, call microvm_teardown_wait() before exit.
 */
MICROVM_API void microvm_destroy(microvm *vm);

/*
 * Process-wide runtime
 * --------------------
 * Threads the library runs besides each VM's vCPU threads:
 *  - event threads: the device work of all VMs (console input, queue
 *    notifications, disk completions, vsock and network sockets). A VM is
 *    served by one event thread, in order; a thread serves many VMs, taking
 *    a bounded batch of events per wake-up so busy VMs take turns. VMs share
 *    a thread only if their seccomp settings are the same (a filter cannot
 *    leave a thread). Made on demand, up to event_threads per seccomp
 *    setting (default: the number of online CPUs, at most 8), kept while
 *    the process lives (2 fds each: an epoll and an eventfd), stopped at
 *    exit or unload if no VM uses them.
 *  - teardown threads: release destroyed VMs' kernel state; made on demand,
 *    at most teardown_threads (default 16: the kernel's teardown mostly
 *    waits, so parallel teardowns overlap), gone when nothing is queued.
 *    At most teardown_backlog (default 256) VMs wait; beyond that,
 *    microvm_destroy() does its VM's teardown itself.
 * And one cache (since 0.9):
 *  - boot images: the first start of a VM whose kernel or initrd file has
 *    a range of 1 MiB or more to load copies the file once into a sealed
 *    memfd; later starts map that range of the copy copy-on-write into
 *    guest RAM instead of reading the file (no copy, and the VMs share the
 *    pages none of them wrote). A file is recognised by its device, inode,
 *    size, mtime and ctime, so a file written since is copied afresh. One
 *    fd per cached file (none per VM); at most image_cache_mib MiB
 *    (default 256), least recently used files dropped first; a file larger
 *    than that is read as before. Pages VMs still map stay until those VMs
 *    are gone. MICROVM_IMAGE_CACHE_OFF drops the cache and reads every
 *    file.
 * All thread-safe, any time; a new limit applies to what starts after it.
 */
typedef struct microvm_runtime_config {
	uint32_t size;             /* sizeof(microvm_runtime_config) */
	uint32_t event_threads;    /* 1..1024; 0 = leave unchanged */
	uint32_t teardown_threads; /* 1..64; 0 = leave unchanged */
	uint32_t teardown_backlog; /* 1..1048576; 0 = leave unchanged */
	uint32_t image_cache_mib;  /* 1..1048576, or MICROVM_IMAGE_CACHE_OFF;
				    * 0 = leave unchanged. Since 0.9 */
} microvm_runtime_config;

#define MICROVM_IMAGE_CACHE_OFF 0xffffffffu
#define MICROVM_RUNTIME_CONFIG_INIT { sizeof(microvm_runtime_config), 0, 0, 0, 0 }

/* Set the limits above. -EINVAL for a value out of range (nothing changed). */
MICROVM_API int microvm_runtime_configure(const microvm_runtime_config *cfg);

typedef struct microvm_runtime_counters {
	uint32_t size;             /* in: sizeof(microvm_runtime_counters) */
	uint32_t event_threads;    /* running now */
	uint32_t teardown_threads; /* running now */
	uint32_t teardown_pending; /* destroyed VMs not yet torn down */
	uint32_t image_cache_files; /* boot images cached (since 0.9) */
	uint32_t image_cache_kib;   /* their bytes, KiB rounded up (since 0.9) */
} microvm_runtime_counters;

#define MICROVM_RUNTIME_COUNTERS_INIT { sizeof(microvm_runtime_counters), 0, 0, 0, 0, 0 }

/* Fill @out. -EINVAL for NULL or a size below the 0.6 struct. */
MICROVM_API int microvm_runtime_stats(microvm_runtime_counters *out);

/*
 * Wait until every destroyed VM's teardown is done and the teardown threads
 * are gone, at most @timeout_ms (-1: no limit, 0: just check). 0 or
 * -ETIMEDOUT.
 */
MICROVM_API int microvm_teardown_wait(int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* MICROVM_H */
