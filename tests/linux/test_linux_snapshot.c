/*
 * Linux-guest snapshot tests: a Linux guest with state in its RAM (a counter
 * in tmpfs bumped by a background process) is snapshotted and restored
 * twice; both clones continue from the snapshot, take different input, and
 * write their own disks. Run by run.sh like test_linux (inside the emulated
 * SVM machine on hosts without VT-x/AMD-V).
 */
#include "linux_test.h"

#include <sys/stat.h>

#include <microvm_agent.h>

struct guest {
	const char *name;
	microvm *vm;
	int out;
	int in[2];
};

static void guest_fds(struct guest *g, const char *name)
{
	g->name = name;
	g->out = memfd_create("console", MFD_CLOEXEC);
	assert_true(g->out >= 0);
	assert_int_equal(pipe2(g->in, O_CLOEXEC), 0);
}

static void guest_close(struct guest *g)
{
	microvm_destroy(g->vm);
	close(g->out);
	close(g->in[0]);
	close(g->in[1]);
}

/* Wait for @needle after byte @from of the console; returns its offset.
 * A guest that never says it is stuck (run.sh retries that status: under
 * the emulator it is usually the emulator's trouble). */
static size_t guest_wait(struct guest *g, const char *needle, size_t from)
{
	double end = now_ms() + BOOT_TIMEOUT_MS;
	for (;;) {
		char *t = read_all(g->out);
		char *p = strlen(t) > from ? strstr(t + from, needle) : NULL;
		if (p) {
			size_t off = (size_t)(p - t);
			free(t);
			return off;
		}
		exit_if_guest_stalled(g->name, t);
		microvm_exit ex = MICROVM_EXIT_INIT;
		if (microvm_wait(g->vm, 0, &ex) == 0 || now_ms() > end) {
			print_console_tail(g->name, t, 40);
			fprintf(stderr, "%s: exit %u %s\n", g->name, ex.reason, ex.message);
			free(t);
			if (ex.reason)
				fail_msg("%s stopped before printing \"%s\"", g->name, needle);
			fprintf(stderr, "GUEST-STUCK: %s never printed \"%s\"\n", g->name, needle);
			fflush(NULL);
			_exit(EXIT_GUEST_STUCK);
		}
		free(t);
		usleep(20000);
	}
}

static void guest_send(struct guest *g, const char *line)
{
	size_t n = strlen(line);
	assert_int_equal(write(g->in[1], line, n), (ssize_t)n);
}

/* Send "show", return the counter from the STATE line, check the id. */
static long guest_show(struct guest *g, const char *id)
{
	char *t0 = read_all(g->out);
	size_t from = strlen(t0);
	free(t0);
	guest_send(g, "show\n");
	size_t at = guest_wait(g, "STATE: id=", from);
	at = guest_wait(g, "\n", at); /* the whole line */
	char *t = read_all(g->out);
	char *line = strstr(t + from, "STATE: id=");
	char want[64];
	snprintf(want, sizeof(want), "STATE: id=%s counter=", id);
	if (strncmp(line, want, strlen(want)))
		fail_msg("%s: \"%.*s\", expected id %s", g->name, (int)strcspn(line, "\r\n"), line, id);
	long c = strtol(line + strlen(want), NULL, 10);
	free(t);
	return c;
}

static void disk_starts_with(const char *img, const char *text)
{
	char buf[16] = "";
	int fd = open(img, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(pread(fd, buf, strlen(text), 0) >= 0);
	close(fd);
	if (strncmp(buf, text, strlen(text)))
		fail_msg("disk %s starts with \"%.*s\", expected \"%s\"", img, (int)strlen(text), buf,
			 text);
}

static microvm *restore_clone(struct guest *g, const char *dir, const char *disk)
{
	microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
	cfg.console_in = g->in[0];
	cfg.console_out = g->out;
	cfg.n_disks = 1;
	const char *paths[1] = { disk };
	cfg.disk_paths = paths;
	char err[256];
	double t0 = now_ms();
	int r = microvm_restore(&g->vm, dir, &cfg, err, sizeof(err));
	if (r)
		fail_msg("restore %s: %d %s", g->name, r, err);
	printf("linux snapshot: %s restored in %.1f ms (emulator numbers)\n", g->name,
	       now_ms() - t0);
	return g->vm;
}

static void test_snapshot_two_clones(void **state)
{
	(void)state;
	char dir[] = "/tmp/microvm-linux-snap-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char disk0[300], diskA[300], diskB[300], snap[300];
	snprintf(disk0, sizeof(disk0), "%s/disk0.img", dir);
	snprintf(diskA, sizeof(diskA), "%s/diskA.img", dir);
	snprintf(diskB, sizeof(diskB), "%s/diskB.img", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	int fd = open(disk0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);

	struct guest o;
	guest_fds(&o, "original");
	assert_int_equal(microvm_create(&o.vm), 0);
	assert_int_equal(microvm_set_vcpus(o.vm, 2), 0);
	assert_int_equal(microvm_set_memory(o.vm, 256), 0);
	assert_int_equal(microvm_set_kernel(o.vm, need_env("MICROVM_TEST_BZIMAGE"),
					    BASE_CMDLINE " MICROVM_TEST=snapshot"), 0);
	assert_int_equal(microvm_set_initrd(o.vm, need_env("MICROVM_TEST_INITRD")), 0);
	assert_int_equal(microvm_set_console(o.vm, o.in[0], o.out), 0);
	microvm_disk_config dc = MICROVM_DISK_CONFIG_INIT;
	dc.path = disk0;
	assert_true(microvm_add_disk(o.vm, &dc) >= 0);
	if (microvm_start(o.vm))
		fail_msg("start: %s", microvm_last_error(o.vm));
	guest_wait(&o, "READY-FOR-INPUT", 0);
	long c0 = guest_show(&o, "original");

	assert_int_equal(microvm_pause(o.vm), 0);
	double t0 = now_ms();
	int r = microvm_snapshot(o.vm, snap, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(o.vm));
	printf("linux snapshot: 256 MiB guest snapshotted in %.1f ms (emulator numbers)\n",
	       now_ms() - t0);
	struct stat st;
	char mem[400];
	snprintf(mem, sizeof(mem), "%s/memory", snap);
	assert_int_equal(stat(mem, &st), 0);
	printf("linux snapshot: memory file %lld MiB apparent, %lld MiB on disk\n",
	       (long long)st.st_size >> 20, (long long)st.st_blocks * 512 >> 20);
	/* The disk as it was at the snapshot, one copy per clone. */
	copy_file(disk0, diskA);
	copy_file(disk0, diskB);
	guest_close(&o);

	struct guest a, b;
	guest_fds(&a, "clone A");
	guest_fds(&b, "clone B");
	restore_clone(&a, snap, diskA);
	restore_clone(&b, snap, diskB);

	/* Both continue from the snapshot's counter... */
	guest_send(&a, "id A\n");
	guest_send(&b, "id B\n");
	guest_wait(&a, "ID-SET: A", 0);
	guest_wait(&b, "ID-SET: B", 0);
	long a1 = guest_show(&a, "A"), b1 = guest_show(&b, "B");
	printf("linux snapshot: counter %ld at the snapshot, clone A %ld, clone B %ld\n", c0, a1,
	       b1);
	assert_true(a1 >= c0 && b1 >= c0);
	/* ...and each writes its own disk only. */
	guest_send(&a, "disk AAAA\n");
	guest_send(&b, "disk BBBB\n");
	guest_wait(&a, "DISK-WROTE: AAAA", 0);
	guest_wait(&b, "DISK-WROTE: BBBB", 0);
	disk_starts_with(diskA, "AAAA");
	disk_starts_with(diskB, "BBBB");
	char zero[4] = { 0 };
	int f0 = open(disk0, O_RDONLY | O_CLOEXEC);
	char buf[4];
	assert_int_equal(pread(f0, buf, 4, 0), 4);
	close(f0);
	assert_memory_equal(buf, zero, 4);
	/* The counters keep running in both. */
	long a2, b2;
	do {
		usleep(200000);
		a2 = guest_show(&a, "A");
		b2 = guest_show(&b, "B");
	} while (a2 <= a1 || b2 <= b1);
	printf("linux snapshot: later, clone A %ld, clone B %ld\n", a2, b2);
	guest_close(&a);
	guest_close(&b);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}


/* The guest agent over vsock keeps working in restored clones, each on its
 * own Unix socket; the clones' files and entropy are their own. */
static int agent_console = -1;

static char *agent_sh(microvm *vm, const char *script)
{
	microvm_agent *a = NULL;
	int r = agent_connect_watching(vm, agent_console, "agent guest", BOOT_TIMEOUT_MS, &a);
	if (r) {
		char *t = read_all(agent_console);
		print_console_tail("agent guest", t, 40);
		free(t);
		fail_msg("agent connect for \"%s\": %d %s", script, r, microvm_last_error(vm));
	}
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = (const char *const[]){ "sh", "-c", script, NULL };
	cfg.timeout_ms = 60000;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	r = microvm_agent_exec(a, &cfg, &res);
	if (r || res.exit_code != 0)
		fail_msg("agent exec \"%s\": %d %s exit %d err %s", script, r,
			 r ? microvm_agent_last_error(a) : "", res.exit_code, res.err ? res.err : "");
	char *out = strdup(res.out);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	return out;
}

static void test_agent_after_restore(void **state)
{
	(void)state;
	char dir[] = "/tmp/microvm-linux-asnap-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char snap[300], uds[3][300];
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	for (int i = 0; i < 3; i++)
		snprintf(uds[i], sizeof(uds[i]), "%s/v%d.sock", dir, i);
	int con = memfd_create("console", MFD_CLOEXEC);
	agent_console = con;
	microvm *o;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3;
	vs.uds_path = uds[0];
	assert_int_equal(microvm_create(&o), 0);
	assert_int_equal(microvm_set_memory(o, 256), 0);
	assert_int_equal(microvm_set_kernel(o, need_env("MICROVM_TEST_BZIMAGE"), BASE_CMDLINE), 0);
	assert_int_equal(microvm_set_initrd(o, need_env("MICROVM_TEST_AGENT_INITRD")), 0);
	assert_int_equal(microvm_set_console(o, -1, con), 0);
	assert_int_equal(microvm_set_vsock(o, &vs), 0);
	assert_int_equal(microvm_set_rng(o, 1), 0);
	if (microvm_start(o))
		fail_msg("start: %s", microvm_last_error(o));
	free(agent_sh(o, "echo before-snapshot >/tmp/state"));
	assert_int_equal(microvm_pause(o), 0);
	/* The report on a paused Linux guest: its local APIC and timer,
	 * the vsock device live with its three queues. */
	char rep[8192];
	assert_true(microvm_describe(o, rep, sizeof(rep)) > 0);
	if (!strstr(rep, "  apic: irr=") || !strstr(rep, " timer ") ||
	    !strstr(rep, "virtio-vsock at 0x") ||
	    !strstr(rep, "status 0xf,") || !strstr(rep, "  queue 2: size "))
		fail_msg("report: %s", rep);
	int r = microvm_snapshot(o, snap, 0);
	if (r)
		fail_msg("snapshot: %d %s", r, microvm_last_error(o));
	microvm_destroy(o);

	microvm *c[2];
	for (int i = 0; i < 2; i++) {
		microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
		cfg.console_out = con;
		cfg.vsock_uds_path = uds[i + 1];
		/* Clone 1 also gets a new CID: the guest learns it from a
		 * vsock transport reset event (the device drops packets from
		 * any other CID, so the agent answering proves it). */
		cfg.vsock_cid = i == 1 ? 9 : 0;
		char err[256];
		r = microvm_restore(&c[i], snap, &cfg, err, sizeof(err));
		if (r)
			fail_msg("restore %d: %d %s", i, r, err);
	}
	for (int i = 0; i < 2; i++) {
		char script[128];
		snprintf(script, sizeof(script), "cat /tmp/state; echo clone-%d >/tmp/id", i);
		char *out = agent_sh(c[i], script);
		assert_string_equal(out, "before-snapshot\n");
		free(out);
		/* A fresh seed per clone: their random streams diverge. */
		microvm_agent *a;
		assert_int_equal(microvm_agent_connect(c[i], BOOT_TIMEOUT_MS, &a), 0);
		uint8_t seed[32];
		for (size_t k = 0; k < sizeof(seed); k++)
			seed[k] = (uint8_t)(i * 97 + k);
		assert_int_equal(microvm_agent_reseed(a, seed, sizeof(seed)), 0);
		microvm_agent_close(a);
	}
	char *id0 = agent_sh(c[0], "cat /tmp/id; head -c 16 /dev/urandom | od -An -tx1");
	char *id1 = agent_sh(c[1], "cat /tmp/id; head -c 16 /dev/urandom | od -An -tx1");
	printf("linux snapshot: clone 0 says %s", id0);
	printf("linux snapshot: clone 1 says %s", id1);
	assert_true(strncmp(id0, "clone-0\n", 8) == 0);
	assert_true(strncmp(id1, "clone-1\n", 8) == 0);
	assert_string_not_equal(id0 + 8, id1 + 8);
	free(id0);
	free(id1);
	microvm_destroy(c[0]);
	microvm_destroy(c[1]);
	close(con);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* Boot the agent guest with its vsock bridged at @uds; the caller owns it. */
static microvm *boot_agent_guest(const char *uds, int con)
{
	microvm *vm;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3;
	vs.uds_path = uds;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_memory(vm, 256), 0);
	assert_int_equal(microvm_set_kernel(vm, need_env("MICROVM_TEST_BZIMAGE"), BASE_CMDLINE), 0);
	assert_int_equal(microvm_set_initrd(vm, need_env("MICROVM_TEST_AGENT_INITRD")), 0);
	assert_int_equal(microvm_set_console(vm, -1, con), 0);
	assert_int_equal(microvm_set_vsock(vm, &vs), 0);
	/* virtio-rng: the guest's crng is ready long before the snapshot (the
	 * kernel reseeds on a VM fork only once its crng is ready). */
	assert_int_equal(microvm_set_rng(vm, 1), 0);
	if (microvm_start(vm))
		fail_msg("start: %s", microvm_last_error(vm));
	return vm;
}

/* VMGENID: clones of one snapshot get a new generation ID each, and the
 * guest kernel (CONFIG_VMGENID) reseeds its RNG from the notification, so
 * their random streams differ without any reseed through the agent; the
 * same after microvm_reset(), which also brings back the snapshot's files. */
static void test_vmgenid_reseeds_clones_and_reset(void **state)
{
	(void)state;
	char dir[] = "/tmp/microvm-linux-gsnap-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char snap[300], uds[3][300];
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	for (int i = 0; i < 3; i++)
		snprintf(uds[i], sizeof(uds[i]), "%s/g%d.sock", dir, i);
	int con = memfd_create("console", MFD_CLOEXEC);
	agent_console = con;
	microvm *o = boot_agent_guest(uds[0], con);
	char *drv = agent_sh(o, "basename $(readlink /sys/bus/acpi/devices/LMVM0001:00/driver)");
	assert_string_equal(drv, "vmgenid\n");
	free(drv);
	free(agent_sh(o, "echo pristine >/tmp/state"));
	assert_int_equal(microvm_pause(o), 0);
	if (microvm_snapshot(o, snap, 0))
		fail_msg("snapshot: %s", microvm_last_error(o));
	microvm_destroy(o);
	microvm *c[2];
	char *rnd[2];
	const char *read_rng = "head -c 16 /dev/urandom | od -An -tx1";
	for (int i = 0; i < 2; i++) {
		microvm_restore_config cfg = MICROVM_RESTORE_CONFIG_INIT;
		cfg.console_out = con;
		cfg.vsock_uds_path = uds[i + 1];
		char err[256];
		if (microvm_restore(&c[i], snap, &cfg, err, sizeof(err)))
			fail_msg("restore %d: %s", i, err);
		rnd[i] = agent_sh(c[i], read_rng);
	}
	printf("linux vmgenid: clone 0 random %s", rnd[0]);
	printf("linux vmgenid: clone 1 random %s", rnd[1]);
	assert_string_not_equal(rnd[0], rnd[1]);
	for (int i = 0; i < 2; i++) {
		char *log = agent_sh(c[i], "dmesg | grep -E 'random|Ged' | tail -n 3; "
					   "grep Ged /proc/interrupts || true");
		printf("linux vmgenid: clone %d: %s", i, log);
		assert_non_null(strstr(log, "crng reseeded due to virtual machine fork"));
		free(log);
	}
	/* Reset clone 0 in place: its file changes are gone, its RNG moves on. */
	free(agent_sh(c[0], "echo dirty >/tmp/state; echo new >/tmp/new"));
	if (microvm_reset(c[0], 0))
		fail_msg("reset: %s", microvm_last_error(c[0]));
	char *after = agent_sh(c[0], "cat /tmp/state; test ! -e /tmp/new && echo no-new");
	assert_string_equal(after, "pristine\nno-new\n");
	free(after);
	char *rnd2 = agent_sh(c[0], read_rng);
	printf("linux vmgenid: clone 0 after reset %s", rnd2);
	assert_string_not_equal(rnd2, rnd[0]);
	free(rnd2);
	for (int i = 0; i < 2; i++) {
		free(rnd[i]);
		microvm_destroy(c[i]);
	}
	close(con);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_two_clones),
		cmocka_unit_test(test_agent_after_restore),
		cmocka_unit_test(test_vmgenid_reseeds_clones_and_reset),
	};
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return _cmocka_run_group_tests("linux_snapshot", tests, sizeof(tests) / sizeof(tests[0]),
				       NULL, NULL);
}
