/*
 * Hostile guests (guest/tiny/hostile.c and a few other payloads): each case
 * attacks the host through a device, the bus or the CPU. For every case:
 *  - the host process survives (the test runs on);
 *  - a second VM in the same process, the witness (guest/tiny/pong.c), is
 *    checked to still answer a ping on its console;
 *  - the process's RSS stays bounded (printed per case, checked against
 *    RSS_BOUND_MIB over the whole run);
 *  - the caller sees a clear result: the guest's exit reason, the device's
 *    DEVICE_NEEDS_RESET status (which the guest reports) with the warning the
 *    library logged, or the bounded amount of data the host could push.
 * The case list with results is printed at the end (the deliverable).
 */
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "kvm_test.h"

#define RSS_BOUND_MIB 64
#define PUSH_CAP (64u << 20) /* the most the flood cases try to write */

/* --------------------------------------------------------------- logging */

struct logcap {
	pthread_mutex_t lock;
	int warnings;
	char last[256];
};

static void log_cb(void *opaque, int level, const char *msg)
{
	struct logcap *c = opaque;
	pthread_mutex_lock(&c->lock);
	if (level <= MICROVM_LOG_WARN) {
		c->warnings++;
		snprintf(c->last, sizeof(c->last), "%s", msg);
	}
	pthread_mutex_unlock(&c->lock);
}

/* --------------------------------------------------------------- figures */

struct result {
	char name[48];
	char outcome[320];
	long rss_kib;
};

static struct result results[32];
static int nresults;
static long rss_start;

/* ---------------------------------------------------------------- witness */

static struct {
	microvm *vm;
	int in[2];
	int out;
	int pings;
} W = { NULL, { -1, -1 }, -1, 0 };

static int witness_start(void **state)
{
	if (require_kvm(state) < 0)
		return -1;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		return 0;
	W.out = memfd_create("witness", MFD_CLOEXEC);
	if (W.out < 0 || pipe2(W.in, O_CLOEXEC) < 0)
		return -1;
	if (microvm_create(&W.vm) || microvm_set_memory(W.vm, 16) ||
	    microvm_set_kernel(W.vm, payload("pong"), NULL) ||
	    microvm_set_console(W.vm, W.in[0], W.out) || microvm_start(W.vm))
		return -1;
	if (console_wait_for(W.out, "pong: ready\n", GUEST_TIMEOUT_MS) < 0)
		return -1;
	rss_start = kvm_test_rss_kib();
	return 0;
}

/* The witness answers a new ping. */
static void witness_check(void)
{
	char ping[48], want[64];
	snprintf(ping, sizeof(ping), "ping %d\n", ++W.pings);
	snprintf(want, sizeof(want), "pong: ping %d\n", W.pings);
	assert_int_equal(write(W.in[1], ping, strlen(ping)), (ssize_t)strlen(ping));
	if (console_wait_for(W.out, want, GUEST_TIMEOUT_MS) < 0)
		fail_msg("the witness VM did not answer %s", ping);
	assert_int_equal(microvm_state(W.vm), MICROVM_STATE_RUNNING);
}

/* Close a case: the witness answers, RSS is bounded, the line is kept. */
static void record(const char *name, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void record(const char *name, const char *fmt, ...)
{
	witness_check();
	long rss = kvm_test_rss_kib();
	assert_true(nresults < (int)(sizeof(results) / sizeof(results[0])));
	struct result *r = &results[nresults++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->outcome, sizeof(r->outcome), fmt, ap);
	va_end(ap);
	r->rss_kib = rss;
	printf("case %-34s %s | witness answered | RSS %ld KiB (%+ld)\n", name, r->outcome,
	       rss, rss - rss_start);
	fflush(stdout);
	if (rss - rss_start > RSS_BOUND_MIB * 1024L)
		fail_msg("RSS grew by %ld KiB (bound %d MiB)", rss - rss_start, RSS_BOUND_MIB);
}

static int witness_stop(void **state)
{
	printf("\nHostile-guest cases (%d), witness VM answered %d pings, RSS %ld -> %ld KiB:\n",
	       nresults, W.pings, rss_start, kvm_test_rss_kib());
	for (int i = 0; i < nresults; i++)
		printf("  %-34s %s\n", results[i].name, results[i].outcome);
	microvm_destroy(W.vm);
	if (W.out >= 0)
		close(W.out);
	for (int i = 0; i < 2; i++)
		if (W.in[i] >= 0)
			close(W.in[i]);
	return wait_teardown_done(state);
}

/* ------------------------------------------------------ the hostile VM */

#define DEV_RNG 1u
#define DEV_DISK 2u
#define DEV_VSOCK 4u
#define DEV_CONSOLE 8u

struct hvm {
	microvm *vm;
	int out;
	struct logcap log;
	char disk[64];
	char sock[64];
};

static void hvm_devices(struct hvm *h, uint32_t devs)
{
	if (devs & DEV_RNG)
		assert_int_equal(microvm_set_rng(h->vm, 1), 0);
	if (devs & DEV_DISK) {
		snprintf(h->disk, sizeof(h->disk), "/tmp/microvm-hostile-XXXXXX");
		int fd = mkstemp(h->disk);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 1 << 20), 0);
		assert_int_equal(pwrite(fd, "MICROVM", 7, 0), 7);
		close(fd);
		microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
		dc.path = h->disk;
		assert_int_equal(microvm_add_disk(h->vm, &dc), 0);
	}
	if (devs & DEV_VSOCK) {
		snprintf(h->sock, sizeof(h->sock), "/tmp/microvm-hostile-%d.sock", getpid());
		microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
		vc.guest_cid = 3;
		vc.uds_path = h->sock;
		assert_int_equal(microvm_set_vsock(h->vm, &vc), 0);
	}
}

static void hvm_create(struct hvm *h, const char *name, const char *cmdline, uint32_t devs)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->log.lock, NULL);
	h->out = console_fd();
	h->vm = tiny_vm(name, cmdline, 1, h->out);
	assert_int_equal(microvm_set_log(h->vm, log_cb, &h->log, MICROVM_LOG_WARN), 0);
	hvm_devices(h, devs);
}

static void hvm_destroy(struct hvm *h)
{
	microvm_destroy(h->vm);
	close(h->out);
	if (h->disk[0])
		unlink(h->disk);
	pthread_mutex_destroy(&h->log.lock);
}

/* Run to the guest's reset; returns its console text. */
static const char *hvm_run(struct hvm *h)
{
	start_ok(h->vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(h->vm, GUEST_TIMEOUT_MS, &ex), 0);
	const char *text = console_text(h->out);
	if (ex.reason != MICROVM_EXIT_RESET)
		fail_msg("exit reason %u (%s), guest said:\n%s", ex.reason, ex.message, text);
	return text;
}

static void expect_lines(const char *text, const char *const *lines)
{
	for (; *lines; lines++)
		if (!strstr(text, *lines))
			fail_msg("missing \"%s\"; the guest said:\n%s", *lines, text);
}

static int warnings(struct hvm *h, char *last, size_t len)
{
	pthread_mutex_lock(&h->log.lock);
	int n = h->log.warnings;
	snprintf(last, len, "%s", h->log.last);
	pthread_mutex_unlock(&h->log.lock);
	return n;
}

/* A case where the guest reports each attack and then recovers. */
static void queue_case(const char *name, const char *cmdline, uint32_t devs,
		       const char *const *lines, bool expect_warning)
{
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", cmdline, devs);
	const char *text = hvm_run(&h);
	expect_lines(text, lines);
	assert_non_null(strstr(text, "hostile: recovered\n"));
	char last[256];
	int n = warnings(&h, last, sizeof(last));
	if (expect_warning && (n == 0 || !strstr(last, "needs reset")))
		fail_msg("expected a \"needs reset\" warning, got %d (last: %s)", n, last);
	int attacks = 0;
	while (lines[attacks])
		attacks++;
	/* The guest's own report of the last attack, e.g. what it read back. */
	char said[120];
	const char *l = strstr(text, lines[attacks - 1]);
	snprintf(said, sizeof(said), "%.*s", (int)strcspn(l, "\n"), l);
	record(name, "exit RESET; %d check(s) as expected (\"%s\"); %d warning(s)%s%s; "
	       "device recovered", attacks, said, n, n ? ", last: " : "", n ? last : "");
	hvm_destroy(&h);
}

static void test_descriptors(void **state)
{
	(void)state;
	static const char *const lines[] = {
		"hostile: outside RAM: needs-reset\n",
		"hostile: addr+len wraps: needs-reset\n",
		"hostile: straddles the end of RAM: needs-reset\n",
		"hostile: chain cycle: needs-reset\n",
		"hostile: self loop: needs-reset\n",
		"hostile: next beyond the table: needs-reset\n",
		NULL,
	};
	queue_case("descriptors: outside RAM, wrap, loops", "case=1", DEV_RNG, lines, true);
}

static void test_indirect(void **state)
{
	(void)state;
	static const char *const lines[] = {
		"hostile: indirect table of 2048 entries: needs-reset\n",
		"hostile: indirect table outside RAM: needs-reset\n",
		"hostile: cycle inside an indirect table: needs-reset\n",
		"hostile: indirect inside indirect: needs-reset\n",
		NULL,
	};
	queue_case("indirect: oversized, outside, cycles", "case=2", DEV_RNG, lines, true);
}

static void test_avail_jump(void **state)
{
	(void)state;
	static const char *const lines[] = { "hostile: avail index +1000: needs-reset\n", NULL };
	queue_case("avail index jumps by 1000 (> size)", "case=3", DEV_RNG, lines, true);
}

static void test_queue_size(void **state)
{
	(void)state;
	static const char *const lines[] = {
		"hostile: size written while ready: used\n",
		"hostile: size 3 while running: needs-reset\n",
		"hostile: size 65536: needs-reset\n",
		"hostile: head 7 in a ring of 1: needs-reset\n",
		NULL,
	};
	queue_case("queue size changed while running", "case=4", DEV_RNG, lines, true);
}

static void test_notify_storm(void **state)
{
	(void)state;
	static const char *const lines[] = { "hostile: 100000 notifies sent\n", NULL };
	queue_case("notify storm (10^5 notifies)", "case=5", DEV_RNG, lines, false);
}

static void test_odd_access(void **state)
{
	(void)state;
	static const char *const lines[] = { "hostile: odd accesses done", NULL };
	queue_case("MMIO/PIO unassigned, sizes 1/2/4/8", "case=6", DEV_RNG, lines, false);
}

static void test_used_over_desc(void **state)
{
	(void)state;
	static const char *const lines[] = { "hostile: used ring over the descriptor table", NULL };
	queue_case("used ring over descriptor table", "case=7", DEV_RNG, lines, false);
}

static void test_blk_reset_during_io(void **state)
{
	(void)state;
	static const char *const lines[] = { "hostile: 20 resets with 4 reads in flight each\n",
					     NULL };
	queue_case("device reset during I/O (blk)", "case=8", DEV_DISK, lines, false);
}

/* ------------------------------------------------------ vsock and floods */

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

/* Accept one connection within the guest timeout (-1 if none came). */
static int accept_one(int lfd)
{
	struct pollfd p = { lfd, POLLIN, 0 };
	if (poll(&p, 1, GUEST_TIMEOUT_MS) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

static void test_blk_resize_during_io(void **state)
{
	(void)state;
	static const char *const lines[] = {
		"hostile: 20 resizes with 4 reads in flight each, needs-reset after ", NULL
	};
	queue_case("queue resized with I/O in flight", "case=12", DEV_DISK, lines, false);
}

static void test_vsock_lies(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", "case=9 port=5000", DEV_VSOCK);
	char lpath[96];
	snprintf(lpath, sizeof(lpath), "%s_5000", h.sock);
	int lfd = listen_unix(lpath);
	const char *text = hvm_run(&h);
	static const char *const lines[] = {
		"hostile: lying vsock packets sent, device status ok\n",
		"hostile: recovered\n",
		"hostile: stream with a lying RW: RST\n",
		NULL,
	};
	expect_lines(text, lines);
	int c = accept_one(lfd);
	assert_true(c >= 0); /* the honest connection after the lies reached us */
	/* ...and the device closed it over the lying RW: end of file here. */
	int fl = fcntl(c, F_GETFL);
	assert_int_equal(fcntl(c, F_SETFL, fl & ~O_NONBLOCK), 0);
	char byte;
	assert_int_equal(read(c, &byte, 1), 0);
	char last[256];
	int n = warnings(&h, last, sizeof(last));
	record("vsock packets with lying lengths",
	       "6 malformed packets dropped or answered, device kept going; an honest connect "
	       "reached the host; a lying RW on it: RST to the guest, EOF to the host; "
	       "%d warning(s)", n);
	close(c);
	close(lfd);
	unlink(lpath);
	hvm_destroy(&h);
}

/* Write to non-blocking @fd until it stays full (several tries, giving the
 * library time to drain it if it would) or PUSH_CAP bytes went in. */
static size_t flood(int fd)
{
	static char chunk[65536];
	memset(chunk, 'x', sizeof(chunk));
	size_t total = 0;
	for (int round = 0; round < 10 && total < PUSH_CAP; round++) {
		for (;;) {
			ssize_t n = write(fd, chunk, sizeof(chunk));
			if (n <= 0)
				break;
			total += (size_t)n;
			if (total >= PUSH_CAP)
				break;
		}
		usleep(20000);
	}
	return total;
}

static void test_vsock_never_reads(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", "case=10 port=5001", DEV_VSOCK);
	char lpath[96];
	snprintf(lpath, sizeof(lpath), "%s_5001", h.sock);
	int lfd = listen_unix(lpath);
	start_ok(h.vm);
	int c = accept_one(lfd);
	assert_true(c >= 0);
	if (console_wait_for(h.out, "hostile: connected, not reading any more", GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	long rss0 = kvm_test_rss_kib();
	int fds0 = kvm_test_fds();
	size_t pushed = flood(c);
	if (console_wait_for(h.out, "hostile: 2000 connection requests sent\n", GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	long grown = kvm_test_rss_kib() - rss0;
	int fds = kvm_test_fds();
	assert_true(pushed < PUSH_CAP);
	assert_true(fds - fds0 < 16); /* streams for refused requests do not pile up */
	assert_int_equal(microvm_state(h.vm), MICROVM_STATE_RUNNING);
	record("vsock: guest never reads its RX queue",
	       "host writes stall after %zu KiB (socket buffers only); then 2000 connection "
	       "requests with no RX buffer for the RSTs: process fds %d -> %d; RSS %+ld KiB "
	       "meanwhile; VM running", pushed / 1024, fds0, fds, grown);
	/* The VM stops: the host end of its open stream ends (EOF or reset)
	 * instead of waiting for a guest that is gone. */
	assert_int_equal(microvm_stop(h.vm), 0);
	struct pollfd p = { c, POLLIN, 0 };
	assert_int_equal(poll(&p, 1, 10000), 1);
	char drain[65536];
	ssize_t n;
	while ((n = read(c, drain, sizeof(drain))) > 0)
		;
	assert_true(n == 0 || errno == ECONNRESET);
	close(c);
	close(lfd);
	unlink(lpath);
	hvm_destroy(&h);
}

/* virtio-net over a stream socket: malformed transmit chains are counted,
 * an honest frame gets through, and a guest that never posts receive
 * buffers makes the host's writes stall. */
static void test_net(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", "case=13", 0);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	microvm_net_config nc = MICROVM_NET_CONFIG_INIT;
	nc.backend = MICROVM_NET_BACKEND_STREAM_FD;
	nc.fd = sv[1];
	assert_int_equal(microvm_add_net(h.vm, &nc), 0);
	close(sv[1]);
	start_ok(h.vm);
	if (console_wait_for(h.out, "hostile: net frames sent, device status ok\n",
			     GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	uint8_t frame[4 + 60];
	struct pollfd p = { sv[0], POLLIN, 0 };
	assert_int_equal(poll(&p, 1, GUEST_TIMEOUT_MS), 1);
	assert_int_equal(recv(sv[0], frame, sizeof(frame), MSG_WAITALL), (ssize_t)sizeof(frame));
	assert_int_equal(frame[3], 60); /* big-endian length 60 */
	assert_int_equal(frame[4], 0xee);
	microvm_net_counters nst = MICROVM_NET_COUNTERS_INIT;
	assert_int_equal(microvm_net_stats(h.vm, 0, &nst), 0);
	assert_int_equal(nst.tx_malformed, 6);
	assert_int_equal(nst.tx_packets, 1);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	long rss0 = kvm_test_rss_kib();
	size_t pushed = flood(sv[0]);
	long grown = kvm_test_rss_kib() - rss0;
	assert_true(pushed < PUSH_CAP);
	assert_int_equal(microvm_state(h.vm), MICROVM_STATE_RUNNING);
	record("net: malformed TX, RX never read",
	       "tx_malformed %llu, tx_packets %llu (the honest frame reached the host); "
	       "host writes stall after %zu KiB, RSS %+ld KiB meanwhile; VM running",
	       (unsigned long long)nst.tx_malformed, (unsigned long long)nst.tx_packets,
	       pushed / 1024, grown);
	hvm_destroy(&h);
	close(sv[0]);
}

/* A guest that never reads console input: how much the host can push. */
static void console_flood(const char *name, const char *payload_name, const char *cmdline,
			  uint32_t type, const char *ready)
{
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, payload_name, cmdline, 0);
	int in[2];
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(fcntl(in[1], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(microvm_set_console_type(h.vm, type), 0);
	assert_int_equal(microvm_set_console(h.vm, in[0], h.out), 0);
	start_ok(h.vm);
	if (console_wait_for(h.out, ready, GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	long rss0 = kvm_test_rss_kib();
	size_t pushed = flood(in[1]);
	long grown = kvm_test_rss_kib() - rss0;
	assert_true(pushed < (1u << 20)); /* the pipe (64 KiB) and a few device buffers */
	assert_int_equal(microvm_state(h.vm), MICROVM_STATE_RUNNING);
	record(name, "host writes stall after %zu KiB, RSS %+ld KiB meanwhile; VM running",
	       pushed / 1024, grown);
	hvm_destroy(&h);
	close(in[0]);
	close(in[1]);
}

/* The guest floods virtio-console output into a pipe nobody reads. */
static void test_console_output_flood(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", "case=14", 0);
	int out[2];
	assert_int_equal(pipe2(out, O_CLOEXEC), 0); /* blocking, never read */
	assert_int_equal(microvm_set_console_type(h.vm, MICROVM_CONSOLE_VIRTIO), 0);
	assert_int_equal(microvm_set_console(h.vm, -1, out[1]), 0);
	long rss0 = kvm_test_rss_kib();
	start_ok(h.vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(h.vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_RESET); /* the vCPU never got stuck */
	int queued = 0;
	assert_int_equal(ioctl(out[0], FIONREAD, &queued), 0);
	long grown = kvm_test_rss_kib() - rss0;
	record("virtio-console output into a full pipe",
	       "256 KiB of transmit chains + 50000 emerg_wr bytes; the pipe holds %d KiB, the "
	       "rest waits in the ring or is dropped; exit RESET; RSS %+ld KiB", queued / 1024,
	       grown);
	hvm_destroy(&h);
	close(out[0]);
	close(out[1]);
}

static void test_console_never_reads(void **state)
{
	(void)state;
	console_flood("virtio-console: guest never reads RX", "hostile", "case=11",
		      MICROVM_CONSOLE_VIRTIO, "hostile: console up, not reading\n");
}

static void test_serial_never_reads(void **state)
{
	(void)state;
	console_flood("serial: guest never reads input", "busy", "loops=0",
		      MICROVM_CONSOLE_SERIAL, "busy: done, halting\n");
}

/* A snapshot of a VM whose guest left junk in device registers: restore
 * must work (or fail with a clear error), and the clone must run. */
static void test_snapshot_junk_registers(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "hostile", "case=15", DEV_RNG);
	start_ok(h.vm);
	if (console_wait_for(h.out, "hostile: junk left in the registers, status needs-reset\n",
			     GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	assert_int_equal(microvm_pause(h.vm), 0);
	char dir[] = "/tmp/microvm-hostile-snap-XXXXXX", snap[64];
	assert_non_null(mkdtemp(dir));
	snprintf(snap, sizeof(snap), "%s/s", dir);
	int r = microvm_snapshot(h.vm, snap, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(h.vm));
	microvm *clone = NULL;
	char err[256] = "";
	r = microvm_restore(&clone, snap, NULL, err, sizeof(err));
	if (r)
		fail_msg("restore of a guest-made state failed: %d %s", r, err);
	assert_int_equal(microvm_state(clone), MICROVM_STATE_RUNNING);
	assert_int_equal(microvm_pause(clone), 0);
	assert_int_equal(microvm_resume(clone), 0);
	microvm_destroy(clone);
	record("snapshot/restore of junk device registers",
	       "device in needs-reset, a queue of size 3 at 0xffffffffffff0000 not ready, "
	       "bad selectors: snapshot and restore work, the clone runs");
	hvm_destroy(&h);
	char p[96];
	snprintf(p, sizeof(p), "%s/memory", snap);
	unlink(p);
	snprintf(p, sizeof(p), "%s/state.dtb", snap);
	unlink(p);
	rmdir(snap);
	rmdir(dir);
}

/* ------------------------------------------------------------- the CPU */

static void test_triple_fault(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "triple", NULL, 0);
	start_ok(h.vm);
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(h.vm, GUEST_TIMEOUT_MS, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_CRASH);
	record("triple fault", "microvm_wait: MICROVM_EXIT_CRASH (\"%.120s\")", ex.message);
	hvm_destroy(&h);
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static void test_hlt_interrupts_off(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	struct hvm h;
	hvm_create(&h, "busy", "loops=0", 0);
	start_ok(h.vm);
	if (console_wait_for(h.out, "busy: done, halting\n", GUEST_TIMEOUT_MS))
		fail_msg("guest said: %s", console_text(h.out));
	assert_int_equal(microvm_pause(W.vm), 0); /* the witness polls its UART: quiet it */
	double cpu0 = cpu_seconds();
	microvm_exit ex = MICROVM_EXIT_INIT;
	assert_int_equal(microvm_wait(h.vm, 300, &ex), -ETIMEDOUT); /* halted, not stopped */
	double cpu = cpu_seconds() - cpu0;
	assert_int_equal(microvm_resume(W.vm), 0);
	assert_int_equal(microvm_pause(h.vm), 0); /* the kick gets it out of KVM_RUN */
	assert_int_equal(microvm_resume(h.vm), 0);
	assert_int_equal(microvm_stop(h.vm), 0);
	assert_int_equal(microvm_wait(h.vm, 0, &ex), 0);
	assert_int_equal(ex.reason, MICROVM_EXIT_STOPPED);
	record("hlt with interrupts off",
	       "stays RUNNING (wait: -ETIMEDOUT), process CPU %.0f ms over 300 ms halted; "
	       "pause/resume/stop work, exit STOPPED", cpu * 1e3);
	hvm_destroy(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_descriptors),
		cmocka_unit_test(test_indirect),
		cmocka_unit_test(test_avail_jump),
		cmocka_unit_test(test_queue_size),
		cmocka_unit_test(test_notify_storm),
		cmocka_unit_test(test_odd_access),
		cmocka_unit_test(test_used_over_desc),
		cmocka_unit_test(test_blk_reset_during_io),
		cmocka_unit_test(test_blk_resize_during_io),
		cmocka_unit_test(test_vsock_lies),
		cmocka_unit_test(test_vsock_never_reads),
		cmocka_unit_test(test_net),
		cmocka_unit_test(test_console_output_flood),
		cmocka_unit_test(test_console_never_reads),
		cmocka_unit_test(test_serial_never_reads),
		cmocka_unit_test(test_snapshot_junk_registers),
		cmocka_unit_test(test_triple_fault),
		cmocka_unit_test(test_hlt_interrupts_off),
	};
	return cmocka_run_group_tests_name("kvm_hostile", tests, witness_start, witness_stop);
}
