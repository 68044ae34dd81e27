/*
 * Snapshot, restore and copy-on-write clones with tiny guests: the counter
 * payload keeps a count in guest RAM and prints it, so a restored VM must
 * print exactly the numbers after the ones printed before the snapshot.
 * Plus every bad-input case restore must reject cleanly, and a fuzz loop
 * over the state file.
 */
#include "kvm_test.h"

#include <dirent.h>
#include <libfdt.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "snapshot/state.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "vm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "../unit/fifo_call.h"

static char tmpdir[256];
static int restore_err(const char *dir, uint32_t flags, char *err, size_t errlen);
static void copy_snapshot(const char *from, const char *to);

static int group_setup(void **state)
{
	if (require_kvm(state) < 0)
		return -1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/microvm-snap-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static void rm_rf(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	int r = system(cmd);
	(void)r;
}

static int group_teardown(void **state)
{
	rm_rf(tmpdir);
	return wait_teardown_done(state);
}

static const char *snap_path(const char *name)
{
	static __thread char p[512];
	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	return p;
}

/* Whole console memfd (the counter's output stays small). */
static char *read_all(int fd, size_t *len)
{
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
	b[n > 0 ? n : 0] = 0;
	if (len)
		*len = n > 0 ? (size_t)n : 0;
	return b;
}

/* The last complete "count N\n" line in @text, 0 if none (a line still
 * being printed does not count: its number may be cut short). */
static uint64_t last_count(const char *text)
{
	uint64_t last = 0;
	for (const char *p = text; (p = strstr(p, "count ")); p += 6) {
		char *end;
		uint64_t n = strtoull(p + 6, &end, 10);
		if ((p == text || p[-1] == '\n') && *end == '\n')
			last = n;
	}
	return last;
}

/* Every "count N" line in @text follows from the previous (N = prev + 1),
 * starting at @first; returns the last or 0 on a gap. */
static uint64_t check_sequence(const char *text, uint64_t first)
{
	uint64_t want = first;
	const char *p = text;
	while ((p = strstr(p, "count "))) {
		if (p != text && p[-1] != '\n') {
			p += 6;
			continue;
		}
		char *end;
		uint64_t n = strtoull(p + 6, &end, 10);
		if (*end != '\n')
			break; /* last, partial line */
		if (n != want) {
			size_t at = (size_t)(p - text);
			print_error("count %llu where %llu was expected, at byte %zu: ...%.*s\n",
				    (unsigned long long)n, (unsigned long long)want, at,
				    (int)(at > 120 ? 240 : at + 120), text + (at > 120 ? at - 120 : 0));
			return 0;
		}
		want++;
		p = end;
	}
	return want - 1;
}

/* Highest count printed on @fd so far. */
static uint64_t count_now(int fd)
{
	char *t = read_all(fd, NULL);
	uint64_t c = last_count(t);
	free(t);
	return c;
}

/* The original's output up to the snapshot followed by a clone's output
 * is one unbroken count sequence reaching at least @at_least. */
static void assert_continues(const char *before, const char *after, uint64_t at_least)
{
	char *joined = malloc(strlen(before) + strlen(after) + 1);
	assert_non_null(joined);
	strcpy(joined, before);
	strcat(joined, after);
	uint64_t last = check_sequence(joined, 1);
	free(joined);
	if (last < at_least)
		fail_msg("count sequence broken or short: %llu, expected >= %llu",
			 (unsigned long long)last, (unsigned long long)at_least);
}

static int wait_count(int fd, uint64_t at_least)
{
	double end = now_ms() + GUEST_TIMEOUT_MS;
	for (;;) {
		char *t = read_all(fd, NULL);
		uint64_t c = last_count(t);
		free(t);
		if (c >= at_least)
			return 0;
		if (now_ms() > end)
			return -1;
		usleep(2000);
	}
}

/* A running counter VM paused after it printed a few counts. */
static microvm *paused_counter(int out)
{
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	start_ok(vm);
	assert_int_equal(wait_count(out, 5), 0);
	assert_int_equal(microvm_pause(vm), 0);
	return vm;
}

static microvm *restore_ok(const char *dir, uint32_t flags, int in, int out)
{
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.flags = flags;
	cfg.console_in = in;
	cfg.console_out = out;
	microvm *vm = NULL;
	char err[256];
	int r = microvm_restore(&vm, dir, &cfg, err, sizeof(err));
	if (r != 0)
		fail_msg("microvm_restore(%s): %d %s", dir, r, err);
	return vm;
}

/* ------------------------------------------------------------------ tests */

static void test_restore_continues_count(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = paused_counter(out);
	const char *dir = snap_path("count");
	int r = microvm_snapshot(vm, dir, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	assert_int_equal(microvm_state(vm), MICROVM_STATE_PAUSED);
	char *before = read_all(out, NULL);
	uint64_t k = check_sequence(before, 1);
	assert_true(k >= 5);

	/* The original continues too. */
	assert_int_equal(microvm_resume(vm), 0);
	assert_int_equal(wait_count(out, k + 3), 0);
	microvm_destroy(vm);

	/* The clone's output, appended to what was printed before the
	 * snapshot, is one unbroken sequence. */
	int out2 = console_fd();
	microvm *c = restore_ok(dir, 0, -1, out2);
	assert_int_equal(microvm_state(c), MICROVM_STATE_RUNNING);
	assert_int_equal(wait_count(out2, k + 5), 0);
	char *after = read_all(out2, NULL);
	assert_continues(before, after, k + 5);
	microvm_destroy(c);
	free(before);
	free(after);
	close(out);
	close(out2);
}

static void test_restore_paused_and_snapshot_again(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = paused_counter(out);
	const char *dir = snap_path("paused");
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	char *before = read_all(out, NULL);
	uint64_t k = last_count(before);
	microvm_destroy(vm);

	int out2 = console_fd();
	microvm *c = restore_ok(dir, MICROVM_RESTORE_PAUSED, -1, out2);
	assert_int_equal(microvm_state(c), MICROVM_STATE_PAUSED);
	usleep(50000);
	assert_int_equal(count_now(out2), 0); /* nothing ran */
	/* A restored VM can be snapshotted again (its RAM is a private file
	 * mapping) over the same directory, atomically replacing it. */
	int r = microvm_snapshot(c, dir, 0);
	if (r)
		fail_msg("snapshot of a restored VM: %d %s", r, microvm_last_error(c));
	assert_int_equal(microvm_resume(c), 0);
	assert_int_equal(wait_count(out2, k + 3), 0);
	microvm_destroy(c);

	int out3 = console_fd();
	microvm *c2 = restore_ok(dir, MICROVM_RESTORE_VERIFY_MEMORY | MICROVM_RESTORE_PREFAULT, -1,
				 out3);
	assert_int_equal(wait_count(out3, k + 3), 0);
	char *t = read_all(out3, NULL);
	assert_continues(before, t, k + 3);
	microvm_destroy(c2);
	free(t);
	free(before);
	close(out);
	close(out2);
	close(out3);
}

/* The passt process of interface 0 of @vm (user-mode networking). */
static pid_t net_passt_pid_of(microvm *vm)
{
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		if (vm->dev.virtio[i]->ops == &virtio_net_ops)
			return virtio_net_backend(vm->dev.virtio[i]->opaque)->child;
	return 0;
}

/*
 * A network interface goes through the snapshot with its configuration:
 * restore starts a new passt with the same forwards, the link state is
 * kept, the MAC address is new unless the caller keeps it (restore and
 * fork). An fd backend cannot be reopened: restore says so cleanly.
 */
static void test_restore_net(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char path[256], err[256];
	if (net_passt_find(NULL, path, sizeof(path), err, sizeof(err)) < 0) {
		if (getenv("CI"))
			fail_msg("passt is not installed (apt-get install passt), and CI is set: this test must run");
		print_message("SKIPPED: passt is not installed (apt-get install passt)\n");
		skip();
	}
	char dir[512];
	snprintf(dir, sizeof(dir), "%s", snap_path("net"));
	microvm *vm = tiny_vm("counter", "every=2000", 1, -1);
	microvm_net_port fwd = { MICROVM_NET_UDP, 0, 53 };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	close(s);
	fwd.host_port = ntohs(sa.sin_port);
	microvm_net_config nc = MICROVM_NET_CONFIG_INIT;
	nc.backend = MICROVM_NET_BACKEND_USER;
	nc.flags = MICROVM_NET_MAC_SET | MICROVM_NET_LINK_DOWN;
	memcpy(nc.mac, ((uint8_t[]){ 0x52, 0x54, 0, 0xab, 0xcd, 0xef }), 6);
	nc.ports = &fwd;
	nc.n_ports = 1;
	assert_int_equal(microvm_add_net(vm, &nc), 0);
	pid_t p1 = net_passt_pid_of(vm);
	assert_true(p1 > 0);
	start_ok(vm);
	assert_int_equal(microvm_net_set_link(vm, 0, 1), 0);
	assert_int_equal(microvm_net_set_link(vm, 0, 0), 0);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, dir, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	microvm_destroy(vm);
	assert_int_equal(kill(p1, 0), -1); /* reaped */

	microvm *c = restore_ok(dir, MICROVM_RESTORE_PAUSED, -1, -1);
	pid_t p2 = net_passt_pid_of(c);
	assert_true(p2 > 0 && p2 != p1);
	assert_int_equal(kill(p2, 0), 0);
	microvm_net_counters st = MICROVM_NET_COUNTERS_INIT;
	assert_int_equal(microvm_net_stats(c, 0, &st), 0);
	assert_int_equal(st.link_up, 0);
	const struct net_dev_config *cfg = NULL;
	for (uint32_t i = 0; i < c->dev.nr_virtio; i++)
		if (c->dev.virtio[i]->ops == &virtio_net_ops)
			cfg = virtio_net_config(c->dev.virtio[i]->opaque);
	assert_non_null(cfg);
	uint8_t mac[6];
	assert_int_equal(microvm_net_mac(c, 0, mac), 0);
	assert_memory_equal(cfg->mac, mac, 6);
	assert_memory_not_equal(mac, nc.mac, 6); /* a clone gets a new MAC address */
	assert_int_equal(mac[0] & 3, 2);         /* unicast, locally administered */
	assert_int_equal(microvm_net_mac(c, 1, mac), -ENODEV);
	assert_int_equal(microvm_net_mac(c, 0, NULL), -EINVAL);
	assert_int_equal(cfg->n_fwds, 1);
	assert_int_equal(cfg->fwds[0].host_port, fwd.host_port);
	assert_int_equal(microvm_net_set_link(c, 0, 1), 0);
	assert_int_equal(microvm_resume(c), 0);
	microvm_destroy(c);
	assert_int_equal(kill(p2, 0), -1);

	/* Told to keep it, the clone has the saved MAC address. */
	c = restore_ok(dir, MICROVM_RESTORE_PAUSED | MICROVM_RESTORE_KEEP_MAC, -1, -1);
	assert_int_equal(microvm_net_mac(c, 0, mac), 0);
	assert_memory_equal(mac, nc.mac, 6);
	/* A fork too: a new MAC address (with its own passt) unless kept. */
	for (uint32_t keep = 0; keep <= MICROVM_FORK_KEEP_MAC; keep += MICROVM_FORK_KEEP_MAC) {
		microvm_fork_config fc = MICROVM_FORK_CONFIG_INIT;
		fc.flags = MICROVM_FORK_PAUSED | keep;
		microvm *child = NULL;
		assert_int_equal(microvm_fork(c, &child, &fc), 0);
		uint8_t cmac[6];
		assert_int_equal(microvm_net_mac(child, 0, cmac), 0);
		assert_true((memcmp(cmac, mac, 6) == 0) == (keep != 0));
		assert_true(net_passt_pid_of(child) > 0 && net_passt_pid_of(child) != net_passt_pid_of(c));
		microvm_destroy(child);
	}
	microvm_destroy(c);
	rm_rf(dir);

	/* A stream fd backend: snapshot works, restore refuses cleanly. */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	vm = tiny_vm("counter", "every=2000", 1, -1);
	microvm_net_config sc = MICROVM_NET_CONFIG_INIT;
	sc.backend = MICROVM_NET_BACKEND_STREAM_FD;
	sc.fd = sv[0];
	assert_int_equal(microvm_add_net(vm, &sc), 0);
	start_ok(vm);
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	microvm_destroy(vm);
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	c = (microvm *)0x1;
	r = microvm_restore(&c, dir, &rc, err, sizeof(err));
	print_message("  restore with an fd backend -> %d %s\n", r, err);
	assert_int_equal(r, -EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, "fd backend"));
	/* With this clone's own socket it restores, and frames flow there. */
	int sv2[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
	int32_t fds[1] = { sv2[0] };
	rc.n_net_fds = 1;
	rc.net_fds = fds;
	r = microvm_restore(&c, dir, &rc, err, sizeof(err));
	if (r)
		fail_msg("restore with net_fds: %d %s", r, err);
	close(sv2[0]);
	assert_int_equal(microvm_net_stats(c, 0, &st), 0);
	assert_int_equal(st.link_up, 1);
	microvm_destroy(c);
	char byte;
	assert_int_equal(read(sv2[1], &byte, 1), 0); /* the clone's copy is closed */
	close(sv2[1]);
	fds[0] = -2; /* bad */
	c = (microvm *)0x1;
	assert_int_equal(microvm_restore(&c, dir, &rc, err, sizeof(err)), -EINVAL);
	assert_null(c);
	close(sv[0]);
	close(sv[1]);
	rm_rf(dir);
}

#define CLONES 100

/*
 * Every kind of device goes through the snapshot: each saves its whole
 * configuration in its own node and restore re-creates it from there, with
 * the caller's per-clone overrides (disk path, vsock socket path and CID).
 */
static void test_restore_all_device_kinds(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char img[600], img2[600], uds[600], uds2[600], dir[512];
	snprintf(img, sizeof(img), "%s/disk.img", tmpdir);
	snprintf(img2, sizeof(img2), "%s/disk2.img", tmpdir);
	snprintf(uds, sizeof(uds), "%s/vsock", tmpdir);
	snprintf(uds2, sizeof(uds2), "%s/vsock2", tmpdir);
	snprintf(dir, sizeof(dir), "%s", snap_path("devices"));
	for (int i = 0; i < 2; i++) {
		int fd = open(i ? img2 : img, O_RDWR | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 1 << 20), 0);
		close(fd);
	}
	microvm *vm = tiny_vm("counter", "every=2000", 1, -1);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = img;
	dc.serial = "disk-serial-1";
	dc.flags = MICROVM_DISK_READ_ONLY | MICROVM_DISK_BACKEND_SYNC;
	assert_int_equal(microvm_add_disk(vm, &dc), 0);
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	assert_int_equal(microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO), 0);
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	vc.guest_cid = 7;
	vc.uds_path = uds;
	assert_int_equal(microvm_set_vsock(vm, &vc), 0);
	start_ok(vm);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, dir, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(vm));
	microvm_destroy(vm);
	unlink(uds);

	/* As saved. */
	microvm *c = restore_ok(dir, MICROVM_RESTORE_PAUSED, -1, -1);
	assert_string_equal(microvm_disk_backend(c, 0), "sync");
	assert_null(microvm_disk_backend(c, 1));
	struct stat st;
	assert_int_equal(stat(uds, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(microvm_resume(c), 0);
	microvm_destroy(c);

	/* With this clone's own disk image and vsock socket. */
	const char *paths[] = { img2 };
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.n_disks = 1;
	cfg.disk_paths = paths;
	cfg.vsock_cid = 9;
	cfg.vsock_uds_path = uds2;
	char e[256] = "stale";
	r = microvm_restore(&c, dir, &cfg, e, sizeof(e));
	if (r)
		fail_msg("restore with overrides: %d %s", r, e);
	assert_string_equal(e, ""); /* success leaves no message behind */
	assert_int_equal(stat(uds2, &st), 0);
	microvm_destroy(c);

	/* An override image of another size is refused cleanly. */
	assert_int_equal(truncate(img2, 2 << 20), 0);
	c = (microvm *)0x1;
	r = microvm_restore(&c, dir, &cfg, e, sizeof(e));
	print_message("  disk of another size -> %d %s\n", r, e);
	assert_int_equal(r, -EINVAL);
	assert_null(c);
	unlink(img);
	unlink(img2);
	unlink(uds);
	unlink(uds2);
	rm_rf(dir);
}

static void test_hundred_clones_diverge(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = paused_counter(out);
	const char *dir = snap_path("clones");
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	uint64_t k = count_now(out);
	microvm_destroy(vm);
	close(out);

	static microvm *c[CLONES];
	static int outs[CLONES], ins[CLONES][2];
	for (int i = 0; i < CLONES; i++) {
		outs[i] = console_fd();
		assert_int_equal(pipe2(ins[i], O_CLOEXEC), 0);
		c[i] = restore_ok(dir, 0, ins[i][0], outs[i]);
	}
	/* Each clone gets its own input byte and must report it, and only it. */
	for (int i = 0; i < CLONES; i++) {
		uint8_t b = (uint8_t)(100 + i);
		assert_int_equal(write(ins[i][1], &b, 1), 1);
	}
	for (int i = 0; i < CLONES; i++) {
		char want[16];
		snprintf(want, sizeof(want), "in %d\n", 100 + i);
		double end = now_ms() + GUEST_TIMEOUT_MS;
		char *t;
		while (!strstr(t = read_all(outs[i], NULL), want) && now_ms() < end) {
			free(t);
			usleep(2000);
		}
		if (!strstr(t, want))
			fail_msg("clone %d did not report its input", i);
		assert_int_equal(strstr(t, "in ") - t, strstr(t, want) - t); /* no other input */
		free(t);
		assert_int_equal(wait_count(outs[i], k + 1), 0);
	}
	/* Stopping half of them leaves the others running. */
	for (int i = 0; i < CLONES; i += 2)
		microvm_destroy(c[i]);
	for (int i = 1; i < CLONES; i += 2) {
		char *t = read_all(outs[i], NULL);
		uint64_t n = last_count(t);
		free(t);
		assert_int_equal(wait_count(outs[i], n + 2), 0);
		assert_int_equal(microvm_state(c[i]), MICROVM_STATE_RUNNING);
		microvm_destroy(c[i]);
	}
	for (int i = 0; i < CLONES; i++) {
		close(outs[i]);
		close(ins[i][0]);
		close(ins[i][1]);
	}
}

static uint64_t allocated_bytes(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static void test_diff_snapshot(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = paused_counter(out);
	assert_int_equal(microvm_snapshot(vm, snap_path("diff-nobase"), MICROVM_SNAPSHOT_DIFF),
			 -ENOENT);
	assert_int_equal(microvm_snapshot(vm, snap_path("base"), 0), 0);
	assert_int_equal(microvm_resume(vm), 0);
	uint64_t k = count_now(out);
	assert_int_equal(wait_count(out, k + 5), 0);
	assert_int_equal(microvm_pause(vm), 0);
	int r = microvm_snapshot(vm, snap_path("diff"), MICROVM_SNAPSHOT_DIFF);
	if (r)
		fail_msg("diff snapshot: %d %s", r, microvm_last_error(vm));
	char *before = read_all(out, NULL);
	uint64_t k2 = last_count(before);
	microvm_destroy(vm);

	char a[600], b[600];
	snprintf(a, sizeof(a), "%s/memory", snap_path("base"));
	snprintf(b, sizeof(b), "%s/memory", snap_path("diff"));
	print_message("base memory file %llu KiB allocated, diff %llu KiB\n",
		      (unsigned long long)allocated_bytes(a) / 1024,
		      (unsigned long long)allocated_bytes(b) / 1024);
	assert_true(allocated_bytes(b) < allocated_bytes(a));

	int out2 = console_fd();
	microvm *c = restore_ok(snap_path("diff"), MICROVM_RESTORE_VERIFY_MEMORY |
				MICROVM_RESTORE_TRACK_DIRTY, -1, out2);
	assert_int_equal(wait_count(out2, k2 + 3), 0);
	char *t = read_all(out2, NULL);
	assert_continues(before, t, k2 + 3);
	/* A diff on top of the restored diff (the chain base -> diff -> diff2). */
	assert_int_equal(microvm_pause(c), 0);
	r = microvm_snapshot(c, snap_path("diff2"), MICROVM_SNAPSHOT_DIFF);
	if (r)
		fail_msg("diff of a restored VM: %d %s", r, microvm_last_error(c));
	uint64_t k3 = count_now(out2);
	microvm_destroy(c);
	int out3 = console_fd();
	microvm *c3 = restore_ok(snap_path("diff2"), MICROVM_RESTORE_VERIFY_MEMORY, -1, out3);
	assert_int_equal(wait_count(out3, k3 + 2), 0);
	microvm_destroy(c3);
	/* Replacing the base makes its diffs unusable: a clean error. */
	{
		int o4 = console_fd();
		microvm *v4 = paused_counter(o4);
		assert_int_equal(microvm_snapshot(v4, snap_path("base"), 0), 0);
		microvm_destroy(v4);
		close(o4);
	}
	char e[256];
	r = restore_err(snap_path("diff"), 0, e, sizeof(e));
	print_message("diff over a replaced base: %d %s\n", r, e);
	assert_int_equal(r, -EINVAL);
	assert_non_null(strstr(e, "was replaced"));
	free(before);
	free(t);
	close(out);
	close(out2);
	close(out3);
}

/* ------------------------------------------------------------- bad input */

static void *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	fstat(fd, &st);
	void *b = malloc((size_t)st.st_size);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void write_file(const char *path, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, len), (ssize_t)len);
	close(fd);
}

/* Copy snapshot @from to @to (cp -r). */
static void copy_snapshot(const char *from, const char *to)
{
	char cmd[2200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r --sparse=always '%s' '%s'", to, from, to);
	assert_int_equal(system(cmd), 0);
}

/* Rewrite the checksum so a modified state passes it (to reach the
 * parser). The blob must still be a structurally valid tree. */
static void fix_checksum(void *fdt, size_t len)
{
	if (fdt_check_header(fdt) != 0 || fdt_totalsize(fdt) != len)
		return;
	if (fdt_setprop_inplace_u32(fdt, 0, "checksum", 0) != 0)
		return;
	fdt_setprop_inplace_u32(fdt, 0, "checksum", crc32c(0, fdt, len));
}

/* Change property @name of node @node to a u32/u64 @v and re-checksum. */
static void patch_prop(const char *dir, const char *node, const char *name, uint64_t v, int bytes)
{
	char p[600];
	snprintf(p, sizeof(p), "%s/state.dtb", dir);
	size_t len;
	void *f = read_file(p, &len);
	int n = node ? fdt_path_offset(f, node) : 0;
	assert_true(n >= 0);
	if (bytes == 4)
		assert_int_equal(fdt_setprop_inplace_u32(f, n, name, (uint32_t)v), 0);
	else
		assert_int_equal(fdt_setprop_inplace_u64(f, n, name, v), 0);
	fix_checksum(f, len);
	write_file(p, f, len);
	free(f);
}

static int restore_err(const char *dir, uint32_t flags, char *err, size_t errlen)
{
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.flags = flags;
	microvm *vm = (microvm *)0x1;
	int r = microvm_restore(&vm, dir, &cfg, err, errlen);
	if (r == 0)
		microvm_destroy(vm);
	else
		assert_null(vm);
	return r;
}

#define EXPECT_BAD(dir, flags, want_err, want_text)                                    \
	do {                                                                           \
		char e_[256] = "";                                                     \
		int r_ = restore_err(dir, flags, e_, sizeof(e_));                      \
		print_message("  %-28s -> %d %s\n", #want_err, r_, e_);                \
		assert_int_equal(r_, want_err);                                        \
		if (!strstr(e_, want_text))                                            \
			fail_msg("error \"%s\" does not mention \"%s\"", e_, want_text); \
	} while (0)

static const char *good_snapshot(void)
{
	static char dir[512];
	snprintf(dir, sizeof(dir), "%s", snap_path("good"));
	if (access(dir, F_OK) == 0)
		return dir;
	int out = console_fd();
	microvm *vm = paused_counter(out);
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	microvm_destroy(vm);
	close(out);
	return dir;
}

static void test_bad_snapshots(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	const char *good = good_snapshot();
	char bad[512];
	snprintf(bad, sizeof(bad), "%s", snap_path("bad"));
	char p[600];
	size_t len;

	EXPECT_BAD(snap_path("does-not-exist"), 0, -ENOENT, "No such file");
	mkdir(snap_path("empty"), 0700);
	EXPECT_BAD(snap_path("empty"), 0, -EINVAL, "not a snapshot");
	snprintf(p, sizeof(p), "%s/state.dtb", good);
	EXPECT_BAD(p, 0, -EINVAL, "not a snapshot directory");

	/* Truncated state file. */
	copy_snapshot(good, bad);
	snprintf(p, sizeof(p), "%s/state.dtb", bad);
	void *f = read_file(p, &len);
	write_file(p, f, len / 2);
	EXPECT_BAD(bad, 0, -EINVAL, "state");
	write_file(p, f, 10);
	EXPECT_BAD(bad, 0, -EINVAL, "not a snapshot state");

	/* One flipped byte in a property value: the checksum catches it. */
	uint8_t *g = malloc(len);
	memcpy(g, f, len);
	g[len - 200] ^= 0x40;
	write_file(p, g, len);
	{
		char e[256];
		int r = restore_err(bad, 0, e, sizeof(e));
		print_message("  flipped byte                 -> %d %s\n", r, e);
		assert_true(r == -EBADMSG || r == -EINVAL);
	}
	free(g);
	write_file(p, f, len);
	free(f);

	/* Wrong format version, too many vCPUs, a vCPU count the state does
	 * not have nodes for. */
	patch_prop(bad, NULL, "format-version", 99, 4);
	EXPECT_BAD(bad, 0, -EINVAL, "format version 99");
	copy_snapshot(good, bad);
	/* Another library version writing the same format: restores. */
	patch_prop(bad, NULL, "library-major", 7, 4);
	{
		char e[256] = "";
		int r = restore_err(bad, 0, e, sizeof(e));
		if (r < 0)
			fail_msg("library-major 7, same format: %d %s", r, e);
	}
	copy_snapshot(good, bad);
	patch_prop(bad, "/machine", "vcpus", 4096, 8);
	EXPECT_BAD(bad, 0, -EINVAL, "4096 vCPUs");
	copy_snapshot(good, bad);
	patch_prop(bad, "/machine", "vcpus", 2, 8);
	EXPECT_BAD(bad, 0, -EINVAL, "vcpu@1");
	copy_snapshot(good, bad);
	patch_prop(bad, "/machine", "memory-mib", 64, 8);
	EXPECT_BAD(bad, 0, -EINVAL, "for 64 MiB of RAM");
	copy_snapshot(good, bad);
	patch_prop(bad, "/machine", "memory-size", 64ull << 20, 8);
	EXPECT_BAD(bad, 0, -EINVAL, "for 16 MiB of RAM");

	/* Memory file shorter than RAM, missing, and corrupted (checked with
	 * MICROVM_RESTORE_VERIFY_MEMORY). */
	copy_snapshot(good, bad);
	snprintf(p, sizeof(p), "%s/memory", bad);
	assert_int_equal(truncate(p, 1 << 20), 0);
	EXPECT_BAD(bad, 0, -EINVAL, "shorter than the guest RAM");
	unlink(p);
	EXPECT_BAD(bad, 0, -EINVAL, "memory");
	copy_snapshot(good, bad);
	int fd = open(p, O_RDWR);
	uint8_t byte;
	assert_int_equal(pread(fd, &byte, 1, (1 << 20) + 64), 1); /* the payload's code */
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, (1 << 20) + 64), 1);
	close(fd);
	EXPECT_BAD(bad, MICROVM_RESTORE_VERIFY_MEMORY, -EBADMSG, "memory checksum mismatch");

	/* Bad arguments. */
	{
		microvm *vm;
		char e[128];
		microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
		assert_int_equal(microvm_restore(NULL, good, NULL, e, sizeof(e)), -EINVAL);
		assert_int_equal(microvm_restore(&vm, NULL, NULL, e, sizeof(e)), -EINVAL);
		cfg.flags = 0x80000000u;
		assert_int_equal(microvm_restore(&vm, good, &cfg, e, sizeof(e)), -EINVAL);
		cfg.flags = 0;
		cfg.n_disks = MICROVM_RESTORE_MAX_DISKS + 1;
		assert_int_equal(microvm_restore(&vm, good, &cfg, e, sizeof(e)), -EINVAL);
		assert_non_null(strstr(e, "disk paths"));
		cfg.n_disks = 0;
		cfg.size = 4;
		assert_int_equal(microvm_restore(&vm, good, &cfg, NULL, 0), -EINVAL);
	}
	rm_rf(bad);
}

/*
 * Device state a guest can never produce, resealed with a valid checksum:
 * a clean restore error, never host memory corruption. The RTC index selects
 * one of the 128 CMOS bytes; with 0x80..0xff the next port 0x71 access read
 * and wrote host heap memory past the RTC (the guest's own port writes mask
 * the index to 7 bits, only a state file could set it).
 */
static void test_bad_device_state(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	const char *good = good_snapshot();
	char bad[512];
	snprintf(bad, sizeof(bad), "%s", snap_path("bad-dev"));
	static const uint32_t indexes[] = { 0x80, 0x81, 0xff, 0x100, 0xffffffffu };
	for (size_t i = 0; i < sizeof(indexes) / sizeof(indexes[0]); i++) {
		copy_snapshot(good, bad);
		patch_prop(bad, "/devices/rtc", "index", indexes[i], 4);
		EXPECT_BAD(bad, 0, -EINVAL, "rtc/index");
	}
	/* The largest valid index restores. */
	copy_snapshot(good, bad);
	patch_prop(bad, "/devices/rtc", "index", 0x7f, 4);
	char e[256] = "";
	int r = restore_err(bad, MICROVM_RESTORE_PAUSED, e, sizeof(e));
	if (r != 0)
		fail_msg("index 0x7f: %d %s", r, e);
	rm_rf(bad);
}

/* ------------------------------------------- FIFOs in a snapshot directory */

struct fifo_case {
	const char *dir;    /* snapshot to restore */
	const char *victim; /* file replaced by a symlink to the FIFO */
	char err[256];
};

static int restore_with_fifo(void *arg, const char *fifo)
{
	struct fifo_case *fc = arg;
	char saved[700];
	snprintf(saved, sizeof(saved), "%s.saved", fc->victim);
	assert_int_equal(rename(fc->victim, saved), 0);
	assert_int_equal(symlink(fifo, fc->victim), 0);
	int r = restore_err(fc->dir, MICROVM_RESTORE_PAUSED, fc->err, sizeof(fc->err));
	assert_int_equal(unlink(fc->victim), 0);
	assert_int_equal(rename(saved, fc->victim), 0);
	return r;
}

static void expect_fifo_refused(const char *dir, const char *victim)
{
	struct fifo_case fc = { .dir = dir, .victim = victim };
	bool blocked;
	char fifo[256];
	int r = call_on_fifo("snap", restore_with_fifo, &fc, &blocked, fifo, sizeof(fifo));
	print_message("  %s as a FIFO -> %d %s\n", victim, r, fc.err);
	if (blocked)
		fail_msg("restore with %s a FIFO blocked until a writer appeared", victim);
	assert_int_equal(r, -EINVAL);
	assert_non_null(strstr(fc.err, "not a regular file"));
}

/* Every file restore opens, also the diff base's, may be a FIFO in a
 * snapshot directory from an untrusted archive: an error at once. */
static void test_fifo_in_snapshot_refused(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	char base[512], diff[512], p[700];
	snprintf(base, sizeof(base), "%s", snap_path("fifo-base"));
	snprintf(diff, sizeof(diff), "%s", snap_path("fifo-diff"));
	copy_snapshot(good_snapshot(), base);
	microvm *vm = restore_ok(base, MICROVM_RESTORE_PAUSED | MICROVM_RESTORE_TRACK_DIRTY, -1,
				 -1);
	int r = microvm_snapshot(vm, diff, MICROVM_SNAPSHOT_DIFF);
	if (r)
		fail_msg("diff snapshot: %d %s", r, microvm_last_error(vm));
	microvm_destroy(vm);

	snprintf(p, sizeof(p), "%s/state.dtb", base);
	expect_fifo_refused(base, p);
	snprintf(p, sizeof(p), "%s/memory", base);
	expect_fifo_refused(base, p);
	snprintf(p, sizeof(p), "%s/state.dtb", diff);
	expect_fifo_refused(diff, p);
	snprintf(p, sizeof(p), "%s/memory", diff);
	expect_fifo_refused(diff, p);
	snprintf(p, sizeof(p), "%s/state.dtb", base); /* the diff's base */
	expect_fifo_refused(diff, p);
	snprintf(p, sizeof(p), "%s/memory", base);
	expect_fifo_refused(diff, p);

	/* Everything put back: the diff restores. */
	char e[256] = "";
	r = restore_err(diff, MICROVM_RESTORE_PAUSED, e, sizeof(e));
	if (r != 0)
		fail_msg("diff restore: %d %s", r, e);
	rm_rf(diff);
	rm_rf(base);
}

static void test_snapshot_errors_keep_vm_and_old_snapshot(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	int out = console_fd();
	microvm *vm = tiny_vm("counter", "every=2000", 1, out);
	assert_int_equal(microvm_snapshot(vm, snap_path("x"), 0), -EINVAL); /* configured */
	start_ok(vm);
	assert_int_equal(wait_count(out, 3), 0);
	assert_int_equal(microvm_snapshot(vm, snap_path("x"), 0), -EINVAL); /* running */
	assert_int_equal(microvm_pause(vm), 0);
	assert_int_equal(microvm_snapshot(vm, snap_path("x"), 0x10), -EINVAL);
	assert_int_equal(microvm_snapshot(vm, NULL, 0), -EINVAL);
	assert_int_equal(microvm_snapshot(vm, "/nonexistent-dir/snap", 0), -ENOENT);
	write_file(snap_path("a-file"), "x", 1);
	assert_int_equal(microvm_snapshot(vm, snap_path("a-file"), 0), -EEXIST);

	char dir[512];
	snprintf(dir, sizeof(dir), "%s", snap_path("keep"));
	assert_int_equal(microvm_snapshot(vm, dir, 0), 0);
	uint64_t k = count_now(out);
	assert_int_equal(microvm_resume(vm), 0);
	assert_int_equal(wait_count(out, k + 3), 0);
	assert_int_equal(microvm_pause(vm), 0);

	/* A write failure (file size limit: EFBIG, like ENOSPC) while
	 * replacing it: the old snapshot stays, no temporary is left, and the
	 * VM still runs. */
	struct rlimit old, small;
	getrlimit(RLIMIT_FSIZE, &old);
	small = (struct rlimit){ 8192, old.rlim_max };
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	int r = microvm_snapshot(vm, dir, 0);
	setrlimit(RLIMIT_FSIZE, &old);
	print_message("snapshot over the file size limit: %d %s\n", r, microvm_last_error(vm));
	assert_int_equal(r, -EFBIG);
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	while ((e = readdir(d)))
		assert_null(strstr(e->d_name, ".tmp-"));
	closedir(d);
	assert_int_equal(microvm_resume(vm), 0);
	uint64_t k2 = count_now(out);
	assert_int_equal(wait_count(out, k2 + 3), 0);
	microvm_destroy(vm);

	int out2 = console_fd();
	microvm *c = restore_ok(dir, MICROVM_RESTORE_VERIFY_MEMORY, -1, out2);
	assert_int_equal(wait_count(out2, k + 2), 0);
	microvm_destroy(c);
	close(out);
	close(out2);
}

/* Random byte flips over a valid state file, with and without a fixed-up
 * checksum: restore either fails cleanly or gives a VM; never a crash or a
 * leak (run under ASan/valgrind by scripts/test.sh). */
static void test_fuzz_state_file(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	const char *good = good_snapshot();
	char fz[512];
	snprintf(fz, sizeof(fz), "%s", snap_path("fuzz"));
	copy_snapshot(good, fz);
	char p[600];
	snprintf(p, sizeof(p), "%s/state.dtb", good);
	size_t len;
	uint8_t *orig = read_file(p, &len);
	snprintf(p, sizeof(p), "%s/state.dtb", fz);
	uint8_t *buf = malloc(len);
	unsigned seed = 12345, ok = 0, failed = 0;
	int iters = getenv("MICROVM_FUZZ_ITERS") ? atoi(getenv("MICROVM_FUZZ_ITERS")) : 300;
	for (int i = 0; i < iters; i++) {
		memcpy(buf, orig, len);
		int flips = 1 + (int)(rand_r(&seed) % 4);
		for (int k = 0; k < flips; k++)
			buf[rand_r(&seed) % len] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
		if (i % 2)
			fix_checksum(buf, len);
		write_file(p, buf, len);
		microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
		cfg.flags = MICROVM_RESTORE_PAUSED;
		microvm *vm = NULL;
		char e[256];
		if (microvm_restore(&vm, fz, &cfg, e, sizeof(e)) == 0) {
			ok++;
			microvm_destroy(vm);
		} else {
			assert_null(vm);
			assert_true(e[0] != '\0');
			failed++;
		}
	}
	print_message("fuzz: %d mutated state files: %u restored, %u rejected\n", iters, ok,
		      failed);
	free(buf);
	free(orig);
	rm_rf(fz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restore_continues_count),
		cmocka_unit_test(test_restore_paused_and_snapshot_again),
		cmocka_unit_test(test_restore_all_device_kinds),
		cmocka_unit_test(test_restore_net),
		cmocka_unit_test(test_hundred_clones_diverge),
		cmocka_unit_test(test_diff_snapshot),
		cmocka_unit_test(test_bad_snapshots),
		cmocka_unit_test(test_bad_device_state),
		cmocka_unit_test(test_fifo_in_snapshot_refused),
		cmocka_unit_test(test_snapshot_errors_keep_vm_and_old_snapshot),
		cmocka_unit_test(test_fuzz_state_file),
	};
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests_name("kvm_snapshot", tests, group_setup, group_teardown);
}
