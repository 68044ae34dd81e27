/*
 * Linux-guest tests of vsock and the guest agent: the project's kernel with
 * the agent initramfs (the agent is /init), a virtio-vsock device, and the
 * host client in include/microvm_agent.h. Run by run.sh (inside the emulated
 * SVM machine on hosts without VT-x/AMD-V; timeouts are generous and nothing
 * depends on time).
 */
#include "linux_test.h"

#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <microvm_agent.h>

#define AGENT_TIMEOUT_MS (4 * 60 * 1000)
#define EXEC_TIMEOUT_MS (60 * 1000)

static microvm *vm;
static int console;
static char uds[108];

static int boot_agent_vm(void **state)
{
	(void)state;
	const char *initrd = getenv("MICROVM_TEST_AGENT_INITRD");
	const char *kernel = getenv("MICROVM_TEST_BZIMAGE");
	if (!initrd || !kernel) {
		fprintf(stderr, "MICROVM_TEST_AGENT_INITRD / _BZIMAGE unset (use run.sh)\n");
		return -1;
	}
	snprintf(uds, sizeof(uds), "/tmp/microvm-agent-test-%d.sock", (int)getpid());
	console = memfd_create("console", MFD_CLOEXEC);
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 42;
	vs.uds_path = uds;
	if (microvm_create(&vm) || microvm_set_vcpus(vm, 2) || microvm_set_memory(vm, 256) ||
	    microvm_set_kernel(vm, kernel, BASE_CMDLINE) || microvm_set_initrd(vm, initrd) ||
	    microvm_set_console(vm, -1, console) || microvm_set_vsock(vm, &vs) ||
	    microvm_set_rng(vm, 1) || microvm_start(vm)) {
		fprintf(stderr, "boot: %s\n", microvm_last_error(vm));
		return -1;
	}
	return 0;
}

static int destroy_vm(void **state)
{
	(void)state;
	microvm_destroy(vm);
	close(console);
	return 0;
}

static void dump_console(void)
{
	char *t = read_all(console);
	print_console_tail("agent guest", t, 40);
	free(t);
}

static microvm_agent *agent(void)
{
	microvm_agent *a = NULL;
	int r = agent_connect_watching(vm, console, "agent guest", AGENT_TIMEOUT_MS, &a);
	if (r) {
		dump_console();
		fail_msg("agent connect: %d %s", r, microvm_last_error(vm));
	}
	return a;
}

/* Run argv, collecting output; asserts the exec itself worked. */
static void run(microvm_agent *a, const char *const *argv, const void *in, size_t in_len,
		microvm_exec_result *res)
{
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = argv;
	cfg.stdin_data = in;
	cfg.stdin_len = in_len;
	cfg.timeout_ms = EXEC_TIMEOUT_MS; /* a hang becomes a failure, not a stuck run */
	*res = (microvm_exec_result)MICROVM_EXEC_RESULT_INIT;
	int r = microvm_agent_exec(a, &cfg, res);
	if (r)
		fail_msg("exec %s: %d %s", argv[0], r, microvm_agent_last_error(a));
	if (res->flags & MICROVM_EXEC_TIMED_OUT) {
		dump_console();
		fail_msg("exec %s: timed out after %d ms with %zu bytes of output", argv[0],
			 EXEC_TIMEOUT_MS, res->out_len);
	}
}

static void test_echo_hello(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	printf("linux agent: connected, agent %s, protocol 0x%x\n", microvm_agent_version(a),
	       microvm_agent_protocol(a));
	microvm_exec_result res;
	run(a, (const char *const[]){ "echo", "hello", NULL }, NULL, 0, &res);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_len, 6);
	assert_string_equal(res.out, "hello\n");
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_exit_code_and_signal(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	microvm_exec_result res;
	run(a, (const char *const[]){ "sh", "-c", "echo out; echo err >&2; exit 42", NULL }, NULL, 0,
	    &res);
	assert_int_equal(res.exit_code, 42);
	assert_int_equal(res.signal, 0);
	assert_string_equal(res.out, "out\n");
	assert_string_equal(res.err, "err\n");
	microvm_exec_result_free(&res);
	run(a, (const char *const[]){ "sh", "-c", "kill -TERM $$", NULL }, NULL, 0, &res);
	assert_int_equal(res.exit_code, -1);
	assert_int_equal(res.signal, 15);
	microvm_exec_result_free(&res);
	/* A crashing command does not hurt the agent. */
	run(a, (const char *const[]){ "sh", "-c", "kill -SEGV $$", NULL }, NULL, 0, &res);
	assert_int_equal(res.signal, 11);
	microvm_exec_result_free(&res);
	run(a, (const char *const[]){ "true", NULL }, NULL, 0, &res);
	assert_int_equal(res.exit_code, 0);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_one_mib_stdout_intact(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	microvm_exec_result res;
	run(a, (const char *const[]){ "sh", "-c",
				      "head -c 1048576 /dev/urandom >/tmp/r && cat /tmp/r", NULL },
	    NULL, 0, &res);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_len, 1 << 20);
	void *file;
	size_t len;
	assert_int_equal(microvm_agent_get_file(a, "/tmp/r", 0, &file, &len), 0);
	assert_int_equal(len, 1 << 20);
	assert_memory_equal(res.out, file, len);
	printf("linux agent: 1 MiB of random stdout matches the guest's file\n");
	free(file);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_stdin_passthrough(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	size_t n = 300000;
	char *in = malloc(n);
	for (size_t i = 0; i < n; i++)
		in[i] = (char)('a' + i % 26);
	microvm_exec_result res;
	run(a, (const char *const[]){ "cat", NULL }, in, n, &res);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_len, n);
	assert_memory_equal(res.out, in, n);
	microvm_exec_result_free(&res);
	run(a, (const char *const[]){ "wc", "-c", NULL }, in, n, &res);
	assert_int_equal(atol(res.out), (long)n);
	microvm_exec_result_free(&res);
	free(in);
	microvm_agent_close(a);
}

static void test_fifty_sequential(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	for (int i = 0; i < 50; i++) {
		char arg[16], want[20];
		snprintf(arg, sizeof(arg), "%d", i);
		snprintf(want, sizeof(want), "%d\n", i);
		microvm_exec_result res;
		run(a, (const char *const[]){ "echo", arg, NULL }, NULL, 0, &res);
		assert_string_equal(res.out, want);
		microvm_exec_result_free(&res);
	}
	microvm_agent_close(a);
}

struct worker {
	int index;
	int ok;
};

static void *concurrent_worker(void *arg)
{
	struct worker *w = arg;
	microvm_agent *a = NULL;
	if (microvm_agent_connect(vm, AGENT_TIMEOUT_MS, &a))
		return NULL;
	char script[128];
	snprintf(script, sizeof(script), "seq %d %d", w->index * 100000, w->index * 100000 + 20000);
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = (const char *const[]){ "sh", "-c", script, NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	if (microvm_agent_exec(a, &cfg, &res) == 0 && res.exit_code == 0) {
		/* Check the whole sequence. */
		long want = w->index * 100000L, got = 0;
		char *p = res.out;
		w->ok = 1;
		while (*p) {
			if (strtol(p, &p, 10) != want++)
				w->ok = 0;
			p++;
			got++;
		}
		if (got != 20001)
			w->ok = 0;
	}
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	return NULL;
}

static void test_eight_concurrent_streams(void **state)
{
	(void)state;
	pthread_t t[8];
	struct worker w[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){ i + 1, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, concurrent_worker, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		if (!w[i].ok)
			fail_msg("stream %d: output missing or out of order", i + 1);
	}
	printf("linux agent: 8 concurrent streams of 20001 lines each, all intact\n");
}

/* The Unix socket bridge (CONNECT handshake); the host side vanishing in
 * the middle of a stream leaves the VM and the agent working. */
struct midstream {
	int raw;
	size_t seen;
};

static int close_after(void *opaque, int stream, const void *data, size_t len)
{
	(void)stream, (void)data;
	struct midstream *m = opaque;
	m->seen += len;
	if (m->seen > 200000 && m->raw >= 0) {
		shutdown(m->raw, SHUT_RDWR); /* the host end goes away */
		m->raw = -1;
	}
	return 0;
}

static void test_host_closes_mid_stream(void **state)
{
	(void)state;
	microvm_agent *warm = agent(); /* the agent is up */
	microvm_agent_close(warm);

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", uds);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	char line[64];
	snprintf(line, sizeof(line), "CONNECT %d\n", MICROVM_AGENT_PORT);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	char ok[32] = "";
	size_t n = 0;
	while (n < sizeof(ok) - 1 && read(fd, ok + n, 1) == 1 && ok[n] != '\n')
		n++;
	assert_true(strncmp(ok, "OK ", 3) == 0);
	printf("linux agent: Unix bridge answered \"%.*s\"\n", (int)n, ok);
	int raw = dup(fd);
	microvm_agent *a;
	assert_int_equal(microvm_agent_open_fd(fd, AGENT_TIMEOUT_MS, &a), 0);
	struct midstream m = { raw, 0 };
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = (const char *const[]){ "yes", "stream", NULL };
	cfg.on_output = close_after;
	cfg.opaque = &m;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	int r = microvm_agent_exec(a, &cfg, &res);
	printf("linux agent: exec after the host closed mid-stream: %d (%s), %zu bytes seen\n", r,
	       r ? microvm_agent_last_error(a) : "", m.seen);
	assert_true(r < 0);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	close(raw);
	/* The VM and the agent carry on. */
	assert_int_equal(microvm_state(vm), MICROVM_STATE_RUNNING);
	microvm_agent *b = agent();
	microvm_exec_result res2;
	run(b, (const char *const[]){ "sh", "-c", "for i in $(seq 100); do ps | grep -q '[y]es stream' || { echo gone; exit; }; sleep 0.1; done; echo still-running", NULL }, NULL, 0, &res2);
	assert_string_equal(res2.out, "gone\n");
	microvm_exec_result_free(&res2);
	microvm_agent_close(b);
}

static void test_files_and_reseed(void **state)
{
	(void)state;
	microvm_agent *a = agent();
	const char text[] = "put by the host\n";
	assert_int_equal(microvm_agent_put_file(a, "/tmp/from-host", text, sizeof(text) - 1, 0640, 0),
			 0);
	microvm_exec_result res;
	run(a, (const char *const[]){ "sh", "-c", "cat /tmp/from-host; stat -c %a /tmp/from-host",
				      NULL }, NULL, 0, &res);
	assert_string_equal(res.out, "put by the host\n640\n");
	microvm_exec_result_free(&res);
	void *d;
	size_t len;
	assert_int_equal(microvm_agent_get_file(a, "/nonexistent", 0, &d, &len), -ENOENT);
	uint8_t seed[64];
	for (size_t i = 0; i < sizeof(seed); i++)
		seed[i] = (uint8_t)(i * 37);
	assert_int_equal(microvm_agent_reseed(a, seed, sizeof(seed)), 0);
	microvm_agent_close(a);
}

static void test_agent_run_ten_lines(void **state)
{
	(void)state;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	int r = microvm_agent_run(vm, (const char *const[]){ "uname", "-r", NULL }, AGENT_TIMEOUT_MS,
				  &res);
	assert_int_equal(r, 0);
	assert_int_equal(res.exit_code, 0);
	printf("linux agent: uname -r in the guest: %s", res.out);
	microvm_exec_result_free(&res);
}

int main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo_hello),
		cmocka_unit_test(test_exit_code_and_signal),
		cmocka_unit_test(test_one_mib_stdout_intact),
		cmocka_unit_test(test_stdin_passthrough),
		cmocka_unit_test(test_fifty_sequential),
		cmocka_unit_test(test_eight_concurrent_streams),
		cmocka_unit_test(test_host_closes_mid_stream),
		cmocka_unit_test(test_files_and_reseed),
		cmocka_unit_test(test_agent_run_ten_lines),
	};
	/* One VM for all cases (it is what an embedder does: many commands in
	 * one VM): RUN-AS-ONE-UNIT tells run.sh not to split it per case. */
	const char *filter = getenv("MICROVM_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return _cmocka_run_group_tests("linux_agent", tests, sizeof(tests) / sizeof(tests[0]),
				       boot_agent_vm, destroy_vm);
}
