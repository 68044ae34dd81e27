/*
 * The guest agent and the host client together, without a VM: the built
 * agent binary (AGENT_BIN, a compile definition) runs on the host with
 * `--listen unix:PATH` and the tests drive it through
 * microvm_agent_open_fd() (and, for the raw cases, through the codec).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <microvm_agent.h>

#include "agent/proto.h"

#ifndef AGENT_BIN
#error "AGENT_BIN must name the microvm-agent binary"
#endif

static pid_t agent_pid = -1;
static char sock_path[108];
static char tmp_dir[64];

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int raw_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static microvm_agent *open_agent(void)
{
	microvm_agent *a = NULL;
	int r = microvm_agent_open_fd(raw_connect(), 5000, &a);
	assert_int_equal(r, 0);
	assert_non_null(a);
	return a;
}

static int group_setup(void **state)
{
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/microvm-agent-test-XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", tmp_dir);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	char listen_arg[128];
	snprintf(listen_arg, sizeof(listen_arg), "unix:%s", sock_path);
	agent_pid = fork();
	if (agent_pid == 0) {
		dup2(p[1], 1);
		execl(AGENT_BIN, "microvm-agent", "--listen", listen_arg, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	/* Wait for the readiness line. */
	char line[256];
	size_t n = 0;
	int64_t deadline = now_ms() + 10000;
	while (n < sizeof(line) - 1 && !memchr(line, '\n', n)) {
		struct pollfd pf = { p[0], POLLIN, 0 };
		int l = (int)(deadline - now_ms());
		if (l <= 0 || poll(&pf, 1, l) <= 0)
			break;
		ssize_t r = read(p[0], line + n, sizeof(line) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(p[0]);
	line[n] = 0;
	if (!strstr(line, "MICROVM-AGENT-READY")) {
		fprintf(stderr, "agent did not get ready: '%s'\n", line);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	if (agent_pid > 0) {
		kill(agent_pid, SIGTERM);
		waitpid(agent_pid, NULL, 0);
	}
	unlink(sock_path);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
	if (system(cmd) != 0)
		return -1;
	return 0;
}

/* Run argv with optional stdin, collect. */
static int run(microvm_agent *a, const char *const *argv, const void *in, size_t in_len,
	       int timeout_ms, microvm_exec_result *res)
{
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = argv;
	cfg.stdin_data = in;
	cfg.stdin_len = in_len;
	cfg.timeout_ms = timeout_ms;
	return microvm_agent_exec(a, &cfg, res);
}

static void test_hello_and_ping(void **state)
{
	microvm_agent *a = open_agent();
	assert_int_equal(microvm_agent_protocol(a) >> 16, 1);
	assert_true(strlen(microvm_agent_version(a)) > 0);
	assert_int_equal(microvm_agent_ping(a), 0);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
	microvm_agent_close(NULL);
	assert_string_equal(microvm_agent_last_error(NULL), "");
}

static void test_echo(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "echo", "hello", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, argv, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.signal, 0);
	assert_int_equal(res.flags, 0);
	assert_string_equal(res.out, "hello\n");
	assert_int_equal(res.out_len, 6);
	assert_non_null(res.err);
	assert_int_equal(res.err_len, 0);
	microvm_exec_result_free(&res);
	assert_null(res.out);
	microvm_agent_close(a);
}

static void test_exit_code_and_stderr(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "sh", "-c", "echo out; echo err >&2; exit 42", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, argv, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.exit_code, 42);
	assert_int_equal(res.signal, 0);
	assert_string_equal(res.out, "out\n");
	assert_string_equal(res.err, "err\n");
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_killed_by_signal(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "sh", "-c", "kill -9 $$", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, argv, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.exit_code, -1);
	assert_int_equal(res.signal, 9);
	assert_int_equal(res.flags & MICROVM_EXEC_TIMED_OUT, 0);
	microvm_exec_result_free(&res);
	/* The agent (and this connection) survive a crashing command. */
	const char *segv[] = { "sh", "-c", "kill -SEGV $$", NULL };
	assert_int_equal(run(a, segv, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.signal, SIGSEGV);
	microvm_exec_result_free(&res);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

static void test_big_stdout(void **state)
{
	microvm_agent *a = open_agent();
	/* Deterministic: seq output compared byte for byte (~1.3 MB). */
	const char *argv[] = { "seq", "1", "200000", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, argv, NULL, 0, 30000, &res), 0);
	assert_int_equal(res.exit_code, 0);
	size_t cap = 2 * 1024 * 1024, n = 0;
	char *expect = malloc(cap);
	assert_non_null(expect);
	for (int i = 1; i <= 200000; i++)
		n += (size_t)snprintf(expect + n, cap - n, "%d\n", i);
	assert_true(n > 1024 * 1024);
	assert_int_equal(res.out_len, n);
	assert_memory_equal(res.out, expect, n);
	free(expect);
	microvm_exec_result_free(&res);

	/* Exactly 1 MiB of binary data: put a random file, cat it back. */
	size_t len = 1024 * 1024;
	uint8_t *data = malloc(len);
	assert_non_null(data);
	for (size_t off = 0; off < len;) {
		ssize_t r = getrandom(data + off, len - off, 0);
		assert_true(r > 0);
		off += (size_t)r;
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/random.bin", tmp_dir);
	assert_int_equal(microvm_agent_put_file(a, path, data, len, 0600, 0), 0);
	const char *cat[] = { "cat", path, NULL };
	assert_int_equal(run(a, cat, NULL, 0, 30000, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_len, len);
	assert_memory_equal(res.out, data, len);
	microvm_exec_result_free(&res);
	free(data);
	microvm_agent_close(a);
}

static void test_stdin(void **state)
{
	microvm_agent *a = open_agent();
	const char *cat[] = { "cat", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, cat, "some input\n", 11, 10000, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(res.out, "some input\n");
	microvm_exec_result_free(&res);

	/* 3 MiB through cat: both directions stream at once. */
	size_t len = 3 * 1024 * 1024 + 17;
	uint8_t *data = malloc(len);
	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 131 + (i >> 12));
	assert_int_equal(run(a, cat, data, len, 30000, &res), 0);
	assert_int_equal(res.out_len, len);
	assert_memory_equal(res.out, data, len);
	microvm_exec_result_free(&res);

	/* A command silent until its input ends (wc): the client must keep
	 * sending stdin without any output coming back. */
	const char *wcc[] = { "wc", "-c", NULL };
	assert_int_equal(run(a, wcc, data, len, 30000, &res), 0);
	assert_int_equal(res.flags, 0);
	assert_int_equal(strtoul(res.out, NULL, 10), len);
	microvm_exec_result_free(&res);

	/* stdin from an fd (a pipe filled by a thread-free writer: a file). */
	char path[128];
	snprintf(path, sizeof(path), "%s/stdin.txt", tmp_dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("from a file\n", f);
	fclose(f);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	const char *wc[] = { "sh", "-c", "cat; echo tail", NULL };
	cfg.argv = wc;
	cfg.stdin_data = "head\n";
	cfg.stdin_len = 5;
	cfg.stdin_fd = fd;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "head\nfrom a file\ntail\n");
	microvm_exec_result_free(&res);
	close(fd);

	/* No stdin: /dev/null (cat ends at once). */
	assert_int_equal(run(a, cat, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.out_len, 0);
	microvm_exec_result_free(&res);

	/* A command that does not read a big stdin still ends. */
	const char *tru[] = { "true", NULL };
	assert_int_equal(run(a, tru, data, len, 10000, &res), 0);
	assert_int_equal(res.exit_code, 0);
	microvm_exec_result_free(&res);
	free(data);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

static void test_env_cwd(void **state)
{
	microvm_agent *a = open_agent();
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	const char *pwd[] = { "pwd", NULL };
	cfg.argv = pwd;
	cfg.cwd = "/tmp";
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "/tmp\n");
	microvm_exec_result_free(&res);

	cfg.cwd = "/nonexistent-dir";
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -ENOENT);
	assert_non_null(strstr(microvm_agent_last_error(a), "chdir"));
	assert_null(res.out);

	/* Default environment. */
	const char *show[] = { "sh", "-c", "echo \"$PATH|$HOME|$FOO\"", NULL };
	cfg = (microvm_exec_config)MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = show;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out,
			    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root|\n");
	microvm_exec_result_free(&res);
	/* Exact environment. */
	const char *env[] = { "FOO=bar", "PATH=/bin:/usr/bin", NULL };
	cfg.envp = env;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "/bin:/usr/bin||bar\n");
	microvm_exec_result_free(&res);
	/* Merged with the default. */
	const char *env2[] = { "FOO=baz", "HOME=/home/x", NULL };
	cfg.envp = env2;
	cfg.flags = MICROVM_EXEC_MERGE_ENV;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(
		res.out,
		"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/home/x|baz\n");
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

/* exec as another user (the agent runs as root here; the host's own
 * /etc/passwd and /etc/group play the guest's), and the resource use. */
static void test_user_and_rusage(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	microvm_agent *a = open_agent();
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	const char *ids[] = { "sh", "-c", "echo $(id -u):$(id -g):$(id -G):$HOME", NULL };
	cfg.argv = ids;
	cfg.user = "nobody"; /* Debian: 65534:65534 (nogroup), home /nonexistent */
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "65534:65534:65534:/nonexistent\n");
	microvm_exec_result_free(&res);
	cfg.user = "1234:daemon"; /* no passwd entry: HOME=/; group by name */
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "1234:1:1:/\n");
	microvm_exec_result_free(&res);
	cfg.user = "4321"; /* numeric, no entry: group 0 */
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_string_equal(res.out, "4321:0:0:/\n");
	microvm_exec_result_free(&res);
	const char *bad[] = { "no-such-user-xyz", "nobody:no-such-group", "nobody:", ":0", "a:b:c" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg.user = bad[i];
		int r = microvm_agent_exec(a, &cfg, &res);
		assert_true(r == -ENOENT || r == -EINVAL);
		assert_null(res.out);
		assert_int_equal(microvm_agent_ping(a), 0); /* still usable */
	}
	cfg.user = "";
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -EINVAL);
	/* Resource use: a command that touches 32 MiB peaks above that. */
	const char *big[] = { "sh", "-c", "head -c 33554432 /dev/zero | tail -c 1 >/dev/null; "
				  "python3 -c 'b = bytearray(32 << 20)' 2>/dev/null || "
				  "dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null", NULL };
	cfg.user = NULL;
	cfg.argv = big;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_true(res.max_rss_kib >= 32 * 1024);
	assert_true(res.user_us + res.sys_us > 0);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_sequential(void **state)
{
	microvm_agent *a = open_agent();
	for (int i = 0; i < 50; i++) {
		char arg[16];
		snprintf(arg, sizeof(arg), "%d", i);
		const char *argv[] = { "echo", arg, NULL };
		microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
		assert_int_equal(run(a, argv, NULL, 0, 10000, &res), 0);
		char expect[20];
		snprintf(expect, sizeof(expect), "%d\n", i);
		assert_string_equal(res.out, expect);
		microvm_exec_result_free(&res);
	}
	microvm_agent_close(a);
}

struct conc {
	int index;
	int result;
	char out[64];
};

static void *conc_thread(void *p)
{
	struct conc *c = p;
	microvm_agent *a = NULL;
	c->result = microvm_agent_open_fd(raw_connect(), 5000, &a);
	if (c->result < 0)
		return NULL;
	char arg[16];
	snprintf(arg, sizeof(arg), "%d", c->index);
	const char *argv[] = { "sh", "-c", "sleep 1; echo conn $0", arg, NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	c->result = run(a, argv, NULL, 0, 20000, &res);
	if (c->result == 0) {
		snprintf(c->out, sizeof(c->out), "%s", res.out);
		if (res.exit_code != 0)
			c->result = -1000 - res.exit_code;
	}
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	return NULL;
}

static void test_concurrent(void **state)
{
	pthread_t t[8];
	struct conc c[8];
	int64_t t0 = now_ms();
	for (int i = 0; i < 8; i++) {
		c[i] = (struct conc){ .index = i };
		assert_int_equal(pthread_create(&t[i], NULL, conc_thread, &c[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(c[i].result, 0);
		char expect[32];
		snprintf(expect, sizeof(expect), "conn %d\n", i);
		assert_string_equal(c[i].out, expect);
	}
	/* They ran in parallel: well under 8 x 1 s. */
	assert_true(now_ms() - t0 < 6000);
}

/* Host goes away while a command streams output: the command is killed,
 * and the agent serves the next connection. */
static void test_host_closes_mid_stream(void **state)
{
	int fd = raw_connect();
	struct agent_buf b = { 0 };
	/* Read HELLO. */
	uint8_t hdr[4096];
	ssize_t n = recv(fd, hdr, sizeof(hdr), 0);
	assert_true(n > 5);
	const char *argv[] = { "yes", "streaming", NULL };
	assert_int_equal(agent_enc_exec(&b, 0, argv, 2, NULL, 0, NULL, NULL), 0);
	assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
	agent_buf_free(&b);
	/* Read until STARTED (type 3 right after a 4-byte length) and some output. */
	uint8_t *buf = malloc(1 << 20);
	assert_non_null(buf);
	size_t got = 0;
	pid_t pid = 0;
	while (got < 200000) {
		n = recv(fd, buf + got, (1 << 20) - got, 0);
		assert_true(n > 0);
		got += (size_t)n;
		struct agent_frame f;
		size_t used;
		if (!pid && agent_frame_parse(buf, got, &f, &used) == 0) {
			uint32_t p32;
			assert_int_equal(f.type, AGENT_MSG_STARTED);
			assert_int_equal(agent_dec_u32(&f, &p32), 0);
			pid = (pid_t)p32;
		}
	}
	assert_true(pid > 0);
	assert_int_equal(kill(pid, 0), 0);
	close(fd);
	free(buf);
	/* The command goes away (killed and reaped by the handler). */
	int64_t deadline = now_ms() + 5000;
	while (kill(pid, 0) == 0 && now_ms() < deadline)
		usleep(10000);
	assert_int_equal(kill(pid, 0), -1);
	/* And the agent still serves. */
	microvm_agent *a = open_agent();
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

static void test_timeout(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "sh", "-c", "echo start; sleep 30; echo never", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	int64_t t0 = now_ms();
	assert_int_equal(run(a, argv, NULL, 0, 300, &res), 0);
	int64_t dt = now_ms() - t0;
	assert_true(dt >= 250 && dt < 5000);
	assert_true(res.flags & MICROVM_EXEC_TIMED_OUT);
	assert_int_equal(res.signal, 9);
	assert_int_equal(res.exit_code, -1);
	assert_string_equal(res.out, "start\n");
	microvm_exec_result_free(&res);
	/* The connection is still usable. */
	const char *echo[] = { "echo", "after", NULL };
	assert_int_equal(run(a, echo, NULL, 0, 10000, &res), 0);
	assert_string_equal(res.out, "after\n");
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

struct killer {
	microvm_agent *a;
	int result;
};

static void *kill_thread(void *p)
{
	struct killer *k = p;
	usleep(200000);
	k->result = microvm_agent_kill(k->a, SIGTERM);
	return NULL;
}

static void test_kill(void **state)
{
	microvm_agent *a = open_agent();
	assert_int_equal(microvm_agent_kill(a, SIGTERM), -ESRCH); /* nothing runs */
	assert_int_equal(microvm_agent_kill(a, 0), -EINVAL);
	assert_int_equal(microvm_agent_kill(a, 65), -EINVAL);
	struct killer k = { a, 1 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, kill_thread, &k), 0);
	const char *argv[] = { "sleep", "30", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	int64_t t0 = now_ms();
	assert_int_equal(run(a, argv, NULL, 0, 20000, &res), 0);
	pthread_join(t, NULL);
	assert_int_equal(k.result, 0);
	assert_true(now_ms() - t0 < 5000);
	assert_int_equal(res.signal, SIGTERM);
	assert_int_equal(res.flags, 0);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static int cancel_after_first(void *opaque, int stream, const void *data, size_t len)
{
	size_t *seen = opaque;
	*seen += len;
	return stream == MICROVM_EXEC_STDOUT ? 1 : 0;
}

static void test_callback_cancel_and_limit(void **state)
{
	microvm_agent *a = open_agent();
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	const char *yes[] = { "yes", NULL };
	size_t seen = 0;
	cfg.argv = yes;
	cfg.on_output = cancel_after_first;
	cfg.opaque = &seen;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_true(res.flags & MICROVM_EXEC_CANCELLED);
	assert_int_equal(res.signal, 9);
	assert_true(seen > 0);
	assert_null(res.out);

	/* Collected output is capped and flagged. */
	cfg = (microvm_exec_config)MICROVM_EXEC_CONFIG_INIT;
	const char *head[] = { "head", "-c", "100000", "/dev/zero", NULL };
	cfg.argv = head;
	cfg.output_limit = 1000;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.out_len, 1000);
	assert_true(res.flags & MICROVM_EXEC_OUT_TRUNCATED);
	assert_false(res.flags & MICROVM_EXEC_ERR_TRUNCATED);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
}

static void test_missing_command(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "no-such-command-xyz", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	assert_int_equal(run(a, argv, NULL, 0, 10000, &res), -ENOENT);
	assert_non_null(strstr(microvm_agent_last_error(a), "no-such-command-xyz"));
	assert_null(res.out);
	/* Through a shell it is the shell's exit status 127. */
	const char *sh[] = { "sh", "-c", "no-such-command-xyz", NULL };
	assert_int_equal(run(a, sh, NULL, 0, 10000, &res), 0);
	assert_int_equal(res.exit_code, 127);
	microvm_exec_result_free(&res);
	/* Not executable. */
	const char *noexec[] = { "/etc/passwd", NULL };
	assert_int_equal(run(a, noexec, NULL, 0, 10000, &res), -EACCES);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

static void test_files(void **state)
{
	microvm_agent *a = open_agent();
	char path[128];
	snprintf(path, sizeof(path), "%s/file.txt", tmp_dir);
	const char text[] = "line one\nline two\n";
	assert_int_equal(microvm_agent_put_file(a, path, text, sizeof(text) - 1, 0640, 0), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	void *data;
	size_t len;
	assert_int_equal(microvm_agent_get_file(a, path, 0, &data, &len), 0);
	assert_int_equal(len, sizeof(text) - 1);
	assert_string_equal(data, text);
	free(data);

	/* Empty file. */
	assert_int_equal(microvm_agent_put_file(a, path, NULL, 0, 0600, 0), 0);
	assert_int_equal(microvm_agent_get_file(a, path, 0, &data, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(data, "");
	free(data);

	/* 2.5 MiB: several chunks each way. */
	size_t big = 5 * 512 * 1024 + 3;
	uint8_t *buf = malloc(big);
	assert_non_null(buf);
	for (size_t i = 0; i < big; i++)
		buf[i] = (uint8_t)(i ^ (i >> 9));
	assert_int_equal(microvm_agent_put_file(a, path, buf, big, 0600, 0), 0);
	assert_int_equal(microvm_agent_get_file(a, path, 0, &data, &len), 0);
	assert_int_equal(len, big);
	assert_memory_equal(data, buf, big);
	free(data);
	/* Too big for the cap: -EFBIG, connection still fine. */
	assert_int_equal(microvm_agent_get_file(a, path, 1000, &data, &len), -EFBIG);
	assert_null(data);
	assert_int_equal(microvm_agent_ping(a), 0);
	free(buf);

	/* Errors come back as errno values. */
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing", tmp_dir);
	assert_int_equal(microvm_agent_get_file(a, missing, 0, &data, &len), -ENOENT);
	assert_null(data);
	assert_non_null(strstr(microvm_agent_last_error(a), "missing"));
	snprintf(missing, sizeof(missing), "%s/no/dir/file", tmp_dir);
	assert_int_equal(microvm_agent_put_file(a, missing, "x", 1, 0600, 0), -ENOENT);
	assert_int_equal(microvm_agent_get_file(a, tmp_dir, 0, &data, &len), -EISDIR);
	assert_int_equal(microvm_agent_put_file(a, path, "x", 1, 010000, 0), -EINVAL);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

static void test_reseed(void **state)
{
	microvm_agent *a = open_agent();
	uint8_t seed[64];
	assert_int_equal(getrandom(seed, sizeof(seed), 0), (ssize_t)sizeof(seed));
	assert_int_equal(microvm_agent_reseed(a, seed, sizeof(seed)), 0);
	assert_int_equal(microvm_agent_reseed(a, seed, 0), -EINVAL);
	uint8_t big[4097] = { 0 };
	assert_int_equal(microvm_agent_reseed(a, big, sizeof(big)), -E2BIG);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

/* Read one frame from a blocking socket into @buf. */
static void read_frame_raw(int fd, uint8_t *buf, size_t cap, struct agent_frame *f)
{
	size_t got = 0, used = 0;
	for (;;) {
		int r = agent_frame_parse(buf, got, f, &used);
		if (r == 0)
			return;
		assert_int_equal(r, -EAGAIN);
		assert_true(got < cap);
		ssize_t n = recv(fd, buf + got, used > got ? used - got : 1, 0);
		assert_true(n > 0);
		got += (size_t)n;
	}
}

/* Unknown message types get ERROR(ENOSYS) and the connection goes on. */
static void test_unknown_type(void **state)
{
	int fd = raw_connect();
	uint8_t buf[4096];
	struct agent_frame f;
	read_frame_raw(fd, buf, sizeof(buf), &f);
	assert_int_equal(f.type, AGENT_MSG_HELLO);
	uint8_t frame[] = { 2, 0, 0, 0, 0x70, 0xaa };
	assert_int_equal(send(fd, frame, sizeof(frame), MSG_NOSIGNAL), (ssize_t)sizeof(frame));
	read_frame_raw(fd, buf, sizeof(buf), &f);
	assert_int_equal(f.type, AGENT_MSG_ERROR);
	struct agent_error e;
	assert_int_equal(agent_dec_error(&f, &e), 0);
	assert_int_equal(e.err, ENOSYS);
	struct agent_buf b = { 0 };
	assert_int_equal(agent_enc_empty(&b, AGENT_MSG_PING), 0);
	assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
	agent_buf_free(&b);
	read_frame_raw(fd, buf, sizeof(buf), &f);
	assert_int_equal(f.type, AGENT_MSG_OK);
	/* A malformed request (bad string) ends the connection with ERROR. */
	uint8_t bad[] = { 9, 0, 0, 0, AGENT_MSG_GET_FILE, 0, 0, 0, 0, 2, 0, 0, 0 };
	assert_int_equal(send(fd, bad, sizeof(bad), MSG_NOSIGNAL), (ssize_t)sizeof(bad));
	read_frame_raw(fd, buf, sizeof(buf), &f);
	assert_int_equal(f.type, AGENT_MSG_ERROR);
	assert_int_equal(recv(fd, buf, sizeof(buf), 0), 0); /* closed */
	close(fd);
}

/* open_fd against peers that are not agents. */
static void test_open_fd_errors(void **state)
{
	microvm_agent *a = (microvm_agent *)1;
	assert_int_equal(microvm_agent_open_fd(-1, 100, &a), -EINVAL);
	assert_null(a);
	int sv[2];
	/* Silent peer: timeout. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(microvm_agent_open_fd(sv[0], 100, &a), -ETIMEDOUT);
	close(sv[1]);
	/* Peer closes: connection reset. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[1]);
	assert_int_equal(microvm_agent_open_fd(sv[0], 1000, &a), -ECONNRESET);
	/* Garbage: protocol error. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[1], "HTTP/1.1 200 OK\r\n", 17), 17);
	assert_int_equal(microvm_agent_open_fd(sv[0], 1000, &a), -EPROTO);
	close(sv[1]);
	/* A well-formed frame that is not HELLO. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct agent_buf b = { 0 };
	assert_int_equal(agent_enc_ok(&b, 0), 0);
	assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
	assert_int_equal(microvm_agent_open_fd(sv[0], 1000, &a), -EPROTO);
	close(sv[1]);
	/* Another major version. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	b.len = 0;
	assert_int_equal(agent_enc_hello(&b, 2u << 16, 0, "9"), 0);
	assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
	assert_int_equal(microvm_agent_open_fd(sv[0], 1000, &a), -EPROTONOSUPPORT);
	close(sv[1]);
	agent_buf_free(&b);
	/* Not a socket. */
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(microvm_agent_open_fd(p[0], 100, &a), -ENOTSOCK);
	close(p[1]);
}

/* The agent dies mid-command: the host gets an error, not a hang, and the
 * connection is then unusable. Uses a private agent instance. */
static void test_dead_peer(void **state)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct agent_buf b = { 0 };
	assert_int_equal(agent_enc_hello(&b, AGENT_PROTO_VERSION, 0, "fake"), 0);
	assert_int_equal(agent_enc_started(&b, 1), 0);
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_STDOUT, "partial", 7), 0);
	assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
	agent_buf_free(&b);
	microvm_agent *a;
	assert_int_equal(microvm_agent_open_fd(sv[0], 1000, &a), 0);
	close(sv[1]);
	const char *argv[] = { "whatever", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	int r = run(a, argv, NULL, 0, -1, &res);
	assert_true(r == -ECONNRESET || r == -EPIPE);
	assert_null(res.out);
	assert_int_equal(microvm_agent_ping(a), -ENOTCONN);
	microvm_agent_close(a);
}

static void test_bad_args(void **state)
{
	microvm_agent *a = open_agent();
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -EINVAL); /* no argv */
	const char *argv[] = { "true", NULL };
	cfg.argv = argv;
	cfg.size = 8;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -EINVAL);
	cfg.size = sizeof(cfg);
	res.size = 4;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -EINVAL);
	res.size = sizeof(res);
	cfg.flags = 0x100;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -EINVAL);
	cfg.flags = 0;
	assert_int_equal(microvm_agent_exec(NULL, &cfg, &res), -EINVAL);
	assert_int_equal(microvm_agent_connect(NULL, 0, NULL), -EINVAL);
	assert_int_equal(microvm_agent_run(NULL, argv, 0, &res), -EINVAL);
	/* A request beyond the 1 MiB frame. */
	char *huge = malloc(2 * 1024 * 1024);
	assert_non_null(huge);
	memset(huge, 'a', 2 * 1024 * 1024 - 1);
	huge[2 * 1024 * 1024 - 1] = 0;
	const char *hv[] = { "echo", huge, NULL };
	cfg.argv = hv;
	assert_int_equal(microvm_agent_exec(a, &cfg, &res), -E2BIG);
	free(huge);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

/*
 * Size-versioned structs (see <microvm.h>): exec accepts the 0.2 layouts
 * (today's), larger ones from a newer header with the unknown part zero
 * (a result's unknown part is zeroed), and refuses smaller sizes or a set
 * unknown config byte with a message.
 */
struct exec_config_newer {
	microvm_exec_config c;
	uint64_t future;
};
struct exec_result_newer {
	microvm_exec_result r;
	uint64_t future;
};

static void test_exec_struct_sizes(void **state)
{
	microvm_agent *a = open_agent();
	const char *argv[] = { "echo", "sized", NULL };
	struct exec_config_newer nc = { MICROVM_EXEC_CONFIG_INIT, 0 };
	struct exec_result_newer nr = { MICROVM_EXEC_RESULT_INIT, 0x5a5a5a5a5a5a5a5aull };
	nc.c.size = sizeof(nc);
	nc.c.argv = argv;
	nr.r.size = sizeof(nr);
	assert_int_equal(microvm_agent_exec(a, &nc.c, &nr.r), 0);
	assert_int_equal(nr.r.exit_code, 0);
	assert_string_equal(nr.r.out, "sized\n");
	assert_int_equal(nr.future, 0); /* not known to this library: zeroed */
	assert_int_equal(nr.r.size, sizeof(nr));
	microvm_exec_result_free(&nr.r);

	nc.future = 1; /* asks for something this library does not have */
	assert_int_equal(microvm_agent_exec(a, &nc.c, &nr.r), -EINVAL);
	assert_non_null(strstr(microvm_agent_last_error(a), "microvm_exec_config size 96: byte 88"));
	assert_null(nr.r.out);

	/* The first release's layouts (0.2), as test-local copies. */
	struct exec_config_v02 {
		uint32_t size, flags;
		const char *const *argv;
		const char *const *envp;
		const char *cwd;
		const void *stdin_data;
		size_t stdin_len;
		int stdin_fd, timeout_ms;
		int (*on_output)(void *, int, const void *, size_t);
		void *opaque;
		size_t output_limit;
	} oc = { sizeof(oc), 0, argv, NULL, NULL, NULL, 0, -1, 0, NULL, NULL, 0 };
	struct exec_result_v02 {
		uint32_t size;
		int32_t exit_code, signal;
		uint32_t flags;
		char *out;
		size_t out_len;
		char *err;
		size_t err_len;
	} orr = { sizeof(orr), 0, 0, 0, NULL, 0, NULL, 0 };
	struct {
		struct exec_result_v02 r;
		uint64_t canary[3]; /* where 0.4's resource use fields are */
	} oldr = { orr, { 7, 7, 7 } };
	assert_int_equal(microvm_agent_exec(a, (const microvm_exec_config *)&oc,
					    (microvm_exec_result *)&oldr.r), 0);
	assert_string_equal(oldr.r.out, "sized\n");
	assert_true(oldr.canary[0] == 7 && oldr.canary[1] == 7 && oldr.canary[2] == 7);
	orr = oldr.r;
	microvm_exec_result_free((microvm_exec_result *)&orr);

	microvm_exec_config c = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	c.argv = argv;
	c.size = 79; /* smaller than the first release (0.2): 80 */
	assert_int_equal(microvm_agent_exec(a, &c, &res), -EINVAL);
	assert_non_null(strstr(microvm_agent_last_error(a), "size 79 is smaller than 80"));
	c.size = sizeof(c);
	res.size = 47;
	assert_int_equal(microvm_agent_exec(a, &c, &res), -EINVAL);
	assert_non_null(strstr(microvm_agent_last_error(a), "size 47 is smaller than 48"));
	res.size = 48;
	assert_int_equal(microvm_agent_exec(a, &c, &res), 0);
	assert_string_equal(res.out, "sized\n");
	microvm_exec_result_free(&res);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
}

/* A VM without vsock (and not running): connect fails at once, no hang. */
static void test_connect_without_vsock(void **state)
{
	microvm *vm;
	assert_int_equal(microvm_create(&vm), 0);
	microvm_agent *a = (microvm_agent *)1;
	int r = microvm_agent_connect(vm, 200, &a);
	assert_true(r == -ENODEV || r == -EINVAL);
	assert_null(a);
	const char *argv[] = { "true", NULL };
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	r = microvm_agent_run(vm, argv, 200, &res);
	assert_true(r == -ENODEV || r == -EINVAL);
	assert_null(res.out);
	microvm_destroy(vm);
}

/* The agent as PID 1 of a new PID namespace (needs CAP_SYS_ADMIN; skipped
 * otherwise): orphaned background processes of commands are reparented to
 * it and must be reaped, and it keeps serving. */
static void test_pid1_reaps_orphans(void **state)
{
	char path[100];
	snprintf(path, sizeof(path), "%s/pid1.sock", tmp_dir);
	int p[2], q[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(pipe2(q, O_CLOEXEC), 0);
	pid_t mid = fork();
	assert_true(mid >= 0);
	if (mid == 0) {
		/* Report the agent's pid (or 0: no namespaces here) on q. */
		pid_t child = 0;
		if (unshare(CLONE_NEWPID) == 0) {
			child = fork();
			if (child == 0) {
				char arg[160];
				snprintf(arg, sizeof(arg), "unix:%s", path);
				dup2(p[1], 1);
				execl(AGENT_BIN, "microvm-agent", "--listen", arg, (char *)NULL);
				_exit(127);
			}
		}
		if (child < 0)
			child = 0;
		if (write(q[1], &child, sizeof(child)) != (ssize_t)sizeof(child))
			_exit(1);
		if (child > 0)
			waitpid(child, NULL, 0);
		_exit(0);
	}
	close(p[1]);
	close(q[1]);
	pid_t agent = -1;
	assert_int_equal(read(q[0], &agent, sizeof(agent)), (ssize_t)sizeof(agent));
	close(q[0]);
	if (agent == 0) {
		close(p[0]);
		waitpid(mid, NULL, 0);
		skip();
	}
	char line[128] = { 0 };
	struct pollfd pf = { p[0], POLLIN, 0 };
	assert_int_equal(poll(&pf, 1, 10000), 1);
	assert_true(read(p[0], line, sizeof(line) - 1) > 0);
	close(p[0]);
	assert_non_null(strstr(line, "MICROVM-AGENT-READY"));

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	microvm_agent *a;
	assert_int_equal(microvm_agent_open_fd(fd, 5000, &a), 0);
	const char *argv[] = { "sh", "-c", "sleep 0.1 & sleep 0.2 & echo $$", NULL };
	for (int i = 0; i < 3; i++) {
		microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
		assert_int_equal(run(a, argv, NULL, 0, 10000, &res), 0);
		assert_int_equal(res.exit_code, 0);
		microvm_exec_result_free(&res);
	}
	/* The orphans ended by now; none may be left as a zombie of PID 1. */
	usleep(600000);
	char cmd[256];
	snprintf(cmd, sizeof(cmd),
		 "for f in /proc/[0-9]*/stat; do read -r l < $f 2>/dev/null && echo \"$l\"; done"
		 " | awk '$4 == %d && $3 == \"Z\"' | wc -l",
		 (int)agent);
	FILE *pp = popen(cmd, "r");
	assert_non_null(pp);
	int zombies = -1;
	assert_int_equal(fscanf(pp, "%d", &zombies), 1);
	pclose(pp);
	assert_int_equal(zombies, 0);
	assert_int_equal(microvm_agent_ping(a), 0);
	microvm_agent_close(a);
	kill(agent, SIGKILL); /* PID 1 of a namespace: only SIGKILL ends it */
	waitpid(mid, NULL, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_and_ping),
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_exit_code_and_stderr),
		cmocka_unit_test(test_killed_by_signal),
		cmocka_unit_test(test_big_stdout),
		cmocka_unit_test(test_stdin),
		cmocka_unit_test(test_env_cwd),
		cmocka_unit_test(test_user_and_rusage),
		cmocka_unit_test(test_sequential),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_host_closes_mid_stream),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_kill),
		cmocka_unit_test(test_callback_cancel_and_limit),
		cmocka_unit_test(test_missing_command),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_reseed),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_open_fd_errors),
		cmocka_unit_test(test_dead_peer),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_exec_struct_sizes),
		cmocka_unit_test(test_connect_without_vsock),
		cmocka_unit_test(test_pid1_reaps_orphans),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
