/*
 * Unit tests of the guest agent protocol codec (lib/agent/proto.c): round
 * trips of every message, and malformed input (short frames, oversized and
 * zero lengths, unknown types, truncated fields, bad strings, bad counts,
 * random corruption) which must give a clean negative errno, never an
 * out-of-bounds access (run under ASan/valgrind to check the latter).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/proto.h"

/* Parse the single frame held by @b. */
static int parse_one(const struct agent_buf *b, struct agent_frame *f)
{
	size_t used;
	int r = agent_frame_parse(b->data, b->len, f, &used);
	if (r == 0)
		assert_int_equal(used, b->len);
	return r;
}

static void test_hello_roundtrip(void **state)
{
	struct agent_buf b = { 0 };
	assert_int_equal(agent_enc_hello(&b, AGENT_PROTO_VERSION, 7, "1.2.3"), 0);
	struct agent_frame f;
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.type, AGENT_MSG_HELLO);
	struct agent_hello h;
	assert_int_equal(agent_dec_hello(&f, &h), 0);
	assert_int_equal(h.version, AGENT_PROTO_VERSION);
	assert_int_equal(h.features, 7);
	assert_string_equal(h.agent_version, "1.2.3");
	/* Wrong decoder for the type. */
	struct agent_exit x;
	assert_int_equal(agent_dec_exit(&f, &x), -EBADMSG);
	agent_buf_free(&b);
}

/* Protocol 1.1: the user to run as, and the resource use with EXIT. */
static void test_exec_user_and_rusage(void **state)
{
	(void)state;
	struct agent_buf b = { 0 };
	const char *argv[] = { "id" };
	struct agent_frame f;
	struct agent_exec e;
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_USER | AGENT_EXEC_RUSAGE, argv, 1, NULL, 0,
					NULL, "nobody:nogroup"),
			 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exec(&f, &e), 0);
	assert_string_equal(e.user, "nobody:nogroup");
	assert_int_equal(e.flags, AGENT_EXEC_USER | AGENT_EXEC_RUSAGE);
	agent_exec_free(&e);
	/* The flag and the string go together; empty and over-long users are bad. */
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_USER, argv, 1, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(agent_enc_exec(&b, 0, argv, 1, NULL, 0, NULL, "root"), -EINVAL);
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_USER, argv, 1, NULL, 0, NULL, ""), -EINVAL);
	char lng[AGENT_USER_MAX + 2];
	memset(lng, 'u', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = 0;
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_USER, argv, 1, NULL, 0, NULL, lng), -EINVAL);
	/* Without the flag the user string is trailing garbage. */
	b.len = 0;
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_USER, argv, 1, NULL, 0, NULL, "x"), 0);
	b.data[AGENT_FRAME_HDR_SIZE] = 0; /* clear the flags */
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);

	b.len = 0;
	struct agent_rusage ru = { 12345, 1000001, 42 };
	assert_int_equal(agent_enc_exit(&b, 0, 0, AGENT_EXIT_RUSAGE, &ru), -EINVAL);
	assert_int_equal(agent_enc_exit(&b, 0, 0, 0, &ru), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_exit x;
	assert_int_equal(agent_dec_exit(&f, &x), 0);
	assert_int_equal(x.flags, AGENT_EXIT_RUSAGE);
	assert_int_equal(x.ru.max_rss_kib, 12345);
	assert_int_equal(x.ru.user_us, 1000001);
	assert_int_equal(x.ru.sys_us, 42);
	/* The flag without the fields is truncated. */
	b.len = 0;
	assert_int_equal(agent_enc_exit(&b, 0, 0, 0, NULL), 0);
	b.data[AGENT_FRAME_HDR_SIZE + 8] = AGENT_EXIT_RUSAGE;
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exit(&f, &x), -EBADMSG);
	agent_buf_free(&b);
}

static void test_exec_roundtrip(void **state)
{
	struct agent_buf b = { 0 };
	const char *argv[] = { "sh", "-c", "echo $X", "" };
	const char *envp[] = { "X=1", "PATH=/bin" };
	assert_int_equal(agent_enc_exec(&b, AGENT_EXEC_STDIN | AGENT_EXEC_ENV, argv, 4, envp, 2,
					"/tmp", NULL),
			 0);
	struct agent_frame f;
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_exec e;
	assert_int_equal(agent_dec_exec(&f, &e), 0);
	assert_int_equal(e.flags, AGENT_EXEC_STDIN | AGENT_EXEC_ENV);
	assert_int_equal(e.argc, 4);
	assert_int_equal(e.envc, 2);
	assert_string_equal(e.cwd, "/tmp");
	for (int i = 0; i < 4; i++)
		assert_string_equal(e.argv[i], argv[i]);
	assert_null(e.argv[4]);
	assert_string_equal(e.envp[0], "X=1");
	assert_string_equal(e.envp[1], "PATH=/bin");
	assert_null(e.envp[2]);
	agent_exec_free(&e);

	/* No env, NULL cwd (sent as ""). */
	b.len = 0;
	assert_int_equal(agent_enc_exec(&b, 0, argv, 1, NULL, 0, NULL, NULL), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exec(&f, &e), 0);
	assert_string_equal(e.cwd, "");
	assert_int_equal(e.envc, 0);
	assert_null(e.envp[0]);
	agent_exec_free(&e);

	/* Encoder argument checks; the buffer is left unchanged. */
	size_t before = b.len;
	assert_int_equal(agent_enc_exec(&b, 0, argv, 0, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(agent_enc_exec(&b, 0x80, argv, 1, NULL, 0, NULL, NULL), -EINVAL);
	const char *empty[] = { "" };
	assert_int_equal(agent_enc_exec(&b, 0, empty, 1, NULL, 0, NULL, NULL), -EINVAL);
	const char *withnull[] = { "a", NULL };
	assert_int_equal(agent_enc_exec(&b, 0, withnull, 2, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(agent_enc_exec(&b, 0, argv, AGENT_MAX_ARGS + 1, NULL, 0, NULL, NULL), -E2BIG);
	assert_int_equal(b.len, before);
	agent_buf_free(&b);
}

static void test_exec_too_big(void **state)
{
	/* 4096 arguments of 300 bytes: more than 1 MiB. */
	const char **argv = calloc(AGENT_MAX_ARGS, sizeof(*argv));
	char *s = malloc(301);
	assert_non_null(argv);
	assert_non_null(s);
	memset(s, 'a', 300);
	s[300] = 0;
	for (unsigned i = 0; i < AGENT_MAX_ARGS; i++)
		argv[i] = s;
	struct agent_buf b = { 0 };
	assert_int_equal(agent_enc_exec(&b, 0, argv, AGENT_MAX_ARGS, NULL, 0, NULL, NULL), -EMSGSIZE);
	assert_int_equal(b.len, 0);
	/* 4096 short ones fit. */
	s[3] = 0;
	assert_int_equal(agent_enc_exec(&b, 0, argv, AGENT_MAX_ARGS, NULL, 0, NULL, NULL), 0);
	struct agent_frame f;
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_exec e;
	assert_int_equal(agent_dec_exec(&f, &e), 0);
	assert_int_equal(e.argc, AGENT_MAX_ARGS);
	agent_exec_free(&e);
	agent_buf_free(&b);
	free(s);
	free(argv);
}

static void test_small_messages(void **state)
{
	struct agent_buf b = { 0 };
	struct agent_frame f;
	uint32_t u;
	uint64_t q;

	assert_int_equal(agent_enc_started(&b, 1234), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_u32(&f, &u), 0);
	assert_int_equal(u, 1234);

	b.len = 0;
	assert_int_equal(agent_enc_signal(&b, 15), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.type, AGENT_MSG_SIGNAL);
	assert_int_equal(agent_dec_u32(&f, &u), 0);
	assert_int_equal(u, 15);

	b.len = 0;
	assert_int_equal(agent_enc_end(&b, 0x123456789ull), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_u64(&f, &q), 0);
	assert_true(q == 0x123456789ull);

	b.len = 0;
	assert_int_equal(agent_enc_ok(&b, 5), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.type, AGENT_MSG_OK);
	assert_int_equal(agent_dec_u64(&f, &q), 0);
	assert_int_equal(q, 5);
	assert_int_equal(agent_dec_u32(&f, &u), -EBADMSG); /* wrong type */

	b.len = 0;
	assert_int_equal(agent_enc_empty(&b, AGENT_MSG_STDIN_EOF), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.len, 0);
	assert_int_equal(agent_dec_empty(&f), 0);
	assert_int_equal(agent_enc_empty(&b, AGENT_MSG_EXIT), -EINVAL);

	b.len = 0;
	assert_int_equal(agent_enc_exit(&b, 42, 0, 0, NULL), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_exit x;
	assert_int_equal(agent_dec_exit(&f, &x), 0);
	assert_int_equal(x.exit_code, 42);
	assert_int_equal(x.signo, 0);
	b.len = 0;
	assert_int_equal(agent_enc_exit(&b, -1, 9, AGENT_EXIT_CORE, NULL), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exit(&f, &x), 0);
	assert_int_equal(x.exit_code, -1);
	assert_int_equal(x.signo, 9);
	assert_int_equal(x.flags, AGENT_EXIT_CORE);
	/* Inconsistent: exit code 300, or signal with an exit code. */
	b.len = 0;
	assert_int_equal(agent_enc_exit(&b, 300, 0, 0, NULL), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exit(&f, &x), -EBADMSG);
	b.len = 0;
	assert_int_equal(agent_enc_exit(&b, 0, 9, 0, NULL), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_exit(&f, &x), -EBADMSG);

	b.len = 0;
	assert_int_equal(agent_enc_put_file(&b, "/etc/x", 0644, 0), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_file_req fr;
	assert_int_equal(agent_dec_put_file(&f, &fr), 0);
	assert_int_equal(fr.mode, 0644);
	assert_string_equal(fr.path, "/etc/x");
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);
	assert_int_equal(agent_enc_put_file(&b, "", 0644, 0), -EINVAL);

	b.len = 0;
	assert_int_equal(agent_enc_get_file(&b, "/proc/cpuinfo", 0), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_get_file(&f, &fr), 0);
	assert_string_equal(fr.path, "/proc/cpuinfo");

	b.len = 0;
	uint8_t seed[32];
	for (int i = 0; i < 32; i++)
		seed[i] = (uint8_t)(i * 7);
	assert_int_equal(agent_enc_reseed(&b, 0, seed, sizeof(seed)), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_reseed rs;
	assert_int_equal(agent_dec_reseed(&f, &rs), 0);
	assert_int_equal(rs.len, 32);
	assert_memory_equal(rs.data, seed, 32);
	assert_int_equal(agent_enc_reseed(&b, 0, seed, 0), -EINVAL);
	uint8_t big[AGENT_RESEED_MAX + 1] = { 0 };
	assert_int_equal(agent_enc_reseed(&b, 0, big, sizeof(big)), -E2BIG);

	b.len = 0;
	assert_int_equal(agent_enc_error(&b, ENOENT, "no such file"), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	struct agent_error er;
	assert_int_equal(agent_dec_error(&f, &er), 0);
	assert_int_equal(er.err, ENOENT);
	assert_string_equal(er.msg, "no such file");
	b.len = 0;
	assert_int_equal(agent_enc_error(&b, 0, NULL), 0); /* errno 0 is invalid */
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(agent_dec_error(&f, &er), -EBADMSG);

	/* Data frames, including an empty one and the largest one. */
	b.len = 0;
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_STDOUT, "abc", 3), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.type, AGENT_MSG_STDOUT);
	assert_int_equal(f.len, 3);
	assert_memory_equal(f.payload, "abc", 3);
	b.len = 0;
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_DATA, NULL, 0), 0);
	assert_int_equal(parse_one(&b, &f), 0);
	assert_int_equal(f.len, 0);
	uint8_t *huge = calloc(1, AGENT_PAYLOAD_MAX + 1);
	assert_non_null(huge);
	b.len = 0;
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_DATA, huge, AGENT_PAYLOAD_MAX), 0);
	assert_int_equal(b.len, AGENT_FRAME_LEN_SIZE + AGENT_FRAME_MAX);
	assert_int_equal(parse_one(&b, &f), 0);
	b.len = 0;
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_DATA, huge, AGENT_PAYLOAD_MAX + 1),
			 -EMSGSIZE);
	assert_int_equal(b.len, 0);
	assert_int_equal(agent_enc_bytes(&b, AGENT_MSG_EXIT, huge, 1), -EINVAL);
	free(huge);
	agent_buf_free(&b);
}

/* Protocol 1.2: NETID carries 1..16 MAC addresses, nothing else. */
static void test_netid(void **state)
{
	(void)state;
	struct agent_buf b = { 0 };
	uint8_t macs[17 * 6];
	for (unsigned i = 0; i < sizeof(macs); i++)
		macs[i] = (uint8_t)i;
	assert_int_equal(agent_enc_netid(&b, 0, macs, 3), 0);
	struct agent_frame f;
	size_t used;
	assert_int_equal(agent_frame_parse(b.data, b.len, &f, &used), 0);
	struct agent_netid id;
	assert_int_equal(agent_dec_netid(&f, &id), 0);
	assert_int_equal(id.n, 3);
	assert_int_equal(id.flags, 0);
	assert_memory_equal(id.macs, macs, 18);
	assert_int_equal(agent_enc_netid(&b, 0, macs, 0), -EINVAL);
	assert_int_equal(agent_enc_netid(&b, 0, macs, 17), -E2BIG);
	assert_int_equal(agent_enc_netid(&b, 0, NULL, 1), -EINVAL);
	/* A count that does not match the bytes, 0 or above 16: malformed. */
	static const struct { uint32_t n; uint32_t bytes; } bad[] = {
		{ 2, 6 }, { 1, 7 }, { 0, 0 }, { 17, 17 * 6 }, { 0xffffffffu, 6 },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t raw[4 + 1 + 8 + 17 * 6];
		uint32_t len = 1 + 8 + bad[i].bytes;
		memcpy(raw, &len, 4); /* little-endian host */
		raw[4] = AGENT_MSG_NETID;
		memset(raw + 5, 0, 4);
		memcpy(raw + 9, &bad[i].n, 4);
		memcpy(raw + 13, macs, bad[i].bytes);
		assert_int_equal(agent_frame_parse(raw, 4 + len, &f, &used), 0);
		assert_int_equal(agent_dec_netid(&f, &id), -EBADMSG);
	}
	agent_buf_free(&b);
}

static void test_frame_errors(void **state)
{
	struct agent_frame f;
	size_t used;
	uint8_t buf[16] = { 0 };
	/* Short: no complete length, then a length without its body. */
	for (size_t n = 0; n < 4; n++)
		assert_int_equal(agent_frame_parse(buf, n, &f, &used), -EAGAIN);
	buf[0] = 5; /* body of 5 bytes */
	buf[4] = AGENT_MSG_STDOUT;
	assert_int_equal(agent_frame_parse(buf, 4, &f, &used), -EAGAIN);
	assert_int_equal(agent_frame_parse(buf, 8, &f, &used), -EAGAIN);
	assert_int_equal(used, 9); /* bytes needed in all */
	assert_int_equal(agent_frame_parse(buf, 9, &f, &used), 0);
	assert_int_equal(f.len, 4);
	/* Zero length: no type byte. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(agent_frame_parse(buf, sizeof(buf), &f, &used), -EBADMSG);
	/* Oversized lengths. */
	uint32_t big[] = { AGENT_FRAME_MAX + 1, 0x7fffffff, 0xffffffff };
	for (size_t i = 0; i < 3; i++) {
		buf[0] = (uint8_t)big[i];
		buf[1] = (uint8_t)(big[i] >> 8);
		buf[2] = (uint8_t)(big[i] >> 16);
		buf[3] = (uint8_t)(big[i] >> 24);
		assert_int_equal(agent_frame_parse(buf, sizeof(buf), &f, &used), -EMSGSIZE);
		assert_int_equal(agent_frame_body_len(buf), -EMSGSIZE);
	}
	/* Unknown types: well delimited, skippable. */
	uint8_t unk[] = { 3, 0, 0, 0, 0x7f, 'x', 'y', 1, 0, 0, 0, 0 };
	assert_int_equal(agent_frame_parse(unk, sizeof(unk), &f, &used), -ENOMSG);
	assert_int_equal(used, 7);
	assert_int_equal(f.type, 0x7f);
	unk[4] = 0;
	assert_int_equal(agent_frame_parse(unk, sizeof(unk), &f, &used), -ENOMSG);
	/* Type 0 again, in a one-byte body. */
	assert_int_equal(agent_frame_parse(unk + 7, 5, &f, &used), -ENOMSG);
	assert_string_equal(agent_msg_name(0x7f), "?");
	assert_string_equal(agent_msg_name(AGENT_MSG_RESEED), "RESEED");
}

/* Build a frame by hand: type + payload. */
static struct agent_frame mkframe(uint8_t type, const void *payload, size_t len)
{
	struct agent_frame f = { type, (uint32_t)len, payload };
	return f;
}

static void test_bad_strings(void **state)
{
	struct agent_file_req fr;
	struct agent_frame f;
	/* GET_FILE: u32 flags, str path. */
	uint8_t ok[] = { 0, 0, 0, 0, 3, 0, 0, 0, '/', 'a', 0 };
	f = mkframe(AGENT_MSG_GET_FILE, ok, sizeof(ok));
	assert_int_equal(agent_dec_get_file(&f, &fr), 0);
	assert_string_equal(fr.path, "/a");

	uint8_t no_nul[] = { 0, 0, 0, 0, 3, 0, 0, 0, '/', 'a', 'b' };
	f = mkframe(AGENT_MSG_GET_FILE, no_nul, sizeof(no_nul));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);

	uint8_t inner_nul[] = { 0, 0, 0, 0, 3, 0, 0, 0, '/', 0, 0 };
	f = mkframe(AGENT_MSG_GET_FILE, inner_nul, sizeof(inner_nul));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);

	uint8_t zero_len[] = { 0, 0, 0, 0, 0, 0, 0, 0 };
	f = mkframe(AGENT_MSG_GET_FILE, zero_len, sizeof(zero_len));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);

	uint8_t empty_path[] = { 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	f = mkframe(AGENT_MSG_GET_FILE, empty_path, sizeof(empty_path));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);

	uint8_t too_long[] = { 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, '/', 0 };
	f = mkframe(AGENT_MSG_GET_FILE, too_long, sizeof(too_long));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);

	uint8_t trailing[] = { 0, 0, 0, 0, 2, 0, 0, 0, '/', 0, 'x' };
	f = mkframe(AGENT_MSG_GET_FILE, trailing, sizeof(trailing));
	assert_int_equal(agent_dec_get_file(&f, &fr), -EBADMSG);
}

static void test_exec_counts(void **state)
{
	struct agent_exec e;
	struct agent_frame f;
	/* flags, argc, envc, cwd "", argv[0] "a" */
	uint8_t p[] = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 'a', 0 };
	f = mkframe(AGENT_MSG_EXEC, p, sizeof(p));
	assert_int_equal(agent_dec_exec(&f, &e), 0);
	agent_exec_free(&e);
	/* argc 0 */
	p[4] = 0;
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);
	assert_null(e.argv);
	/* argc 2 but one string */
	p[4] = 2;
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);
	/* argc 5000: too many */
	p[4] = 5000 & 0xff;
	p[5] = 5000 >> 8;
	assert_int_equal(agent_dec_exec(&f, &e), -E2BIG);
	/* argc 4096 with a tiny payload: rejected before allocating */
	p[4] = 0;
	p[5] = 0x10;
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);
	/* envc too many */
	p[4] = 1;
	p[5] = 0;
	p[8] = 0xff;
	p[9] = 0xff;
	assert_int_equal(agent_dec_exec(&f, &e), -E2BIG);
	p[8] = 1;
	p[9] = 0;
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG); /* env string missing */
	p[8] = 0;
	/* unknown flag */
	p[0] = 0x80;
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);
	p[0] = 0;
	/* empty argv[0] */
	uint8_t q[] = { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	f = mkframe(AGENT_MSG_EXEC, q, sizeof(q));
	assert_int_equal(agent_dec_exec(&f, &e), -EBADMSG);
}

/* Decode @f with the decoder its type calls for. */
static int decode_any(const struct agent_frame *f)
{
	union {
		struct agent_hello h;
		struct agent_exec e;
		struct agent_exit x;
		struct agent_file_req fr;
		struct agent_reseed rs;
		struct agent_netid id;
		struct agent_error er;
	} u;
	uint32_t v32;
	uint64_t v64;
	int r;
	switch (f->type) {
	case AGENT_MSG_HELLO:
		return agent_dec_hello(f, &u.h);
	case AGENT_MSG_EXEC:
		r = agent_dec_exec(f, &u.e);
		if (r == 0) {
			/* Touch every string: must all be in bounds. */
			size_t n = strlen(u.e.cwd);
			for (uint32_t i = 0; i < u.e.argc; i++)
				n += strlen(u.e.argv[i]);
			for (uint32_t i = 0; i < u.e.envc; i++)
				n += strlen(u.e.envp[i]);
			(void)n;
			agent_exec_free(&u.e);
		}
		return r;
	case AGENT_MSG_STARTED:
	case AGENT_MSG_SIGNAL:
		return agent_dec_u32(f, &v32);
	case AGENT_MSG_END:
	case AGENT_MSG_OK:
		return agent_dec_u64(f, &v64);
	case AGENT_MSG_STDIN_EOF:
	case AGENT_MSG_PING:
		return agent_dec_empty(f);
	case AGENT_MSG_EXIT:
		return agent_dec_exit(f, &u.x);
	case AGENT_MSG_PUT_FILE:
		r = agent_dec_put_file(f, &u.fr);
		return r ? r : (int)(strlen(u.fr.path) * 0);
	case AGENT_MSG_GET_FILE:
		r = agent_dec_get_file(f, &u.fr);
		return r ? r : (int)(strlen(u.fr.path) * 0);
	case AGENT_MSG_RESEED:
		return agent_dec_reseed(f, &u.rs);
	case AGENT_MSG_NETID:
		r = agent_dec_netid(f, &u.id);
		return r ? r : (int)(u.id.macs[6 * u.id.n - 1] * 0);
	case AGENT_MSG_ERROR:
		r = agent_dec_error(f, &u.er);
		return r ? r : (int)(strlen(u.er.msg) * 0);
	default:
		return 0; /* raw data frames */
	}
}

/* A stream of one frame of each type. */
static void build_sample(struct agent_buf *b)
{
	const char *argv[] = { "ls", "-l", "/" };
	const char *envp[] = { "A=b" };
	uint8_t seed[16] = { 1, 2, 3 };
	assert_int_equal(agent_enc_hello(b, AGENT_PROTO_VERSION, 0, "0.1.0"), 0);
	assert_int_equal(agent_enc_exec(b, AGENT_EXEC_STDIN, argv, 3, envp, 1, "/root", NULL), 0);
	assert_int_equal(agent_enc_started(b, 77), 0);
	assert_int_equal(agent_enc_bytes(b, AGENT_MSG_STDIN, "input", 5), 0);
	assert_int_equal(agent_enc_empty(b, AGENT_MSG_STDIN_EOF), 0);
	assert_int_equal(agent_enc_bytes(b, AGENT_MSG_STDOUT, "out\n", 4), 0);
	assert_int_equal(agent_enc_bytes(b, AGENT_MSG_STDERR, "err\n", 4), 0);
	assert_int_equal(agent_enc_exit(b, 3, 0, 0, NULL), 0);
	assert_int_equal(agent_enc_signal(b, 9), 0);
	assert_int_equal(agent_enc_put_file(b, "/tmp/f", 0600, 0), 0);
	assert_int_equal(agent_enc_bytes(b, AGENT_MSG_DATA, "data", 4), 0);
	assert_int_equal(agent_enc_end(b, 4), 0);
	assert_int_equal(agent_enc_get_file(b, "/tmp/f", 0), 0);
	assert_int_equal(agent_enc_reseed(b, 0, seed, sizeof(seed)), 0);
	assert_int_equal(agent_enc_netid(b, 0, seed, 2), 0);
	assert_int_equal(agent_enc_empty(b, AGENT_MSG_PING), 0);
	assert_int_equal(agent_enc_ok(b, 0), 0);
	assert_int_equal(agent_enc_error(b, EPERM, "nope"), 0);
}

/* Walk a buffer like a receiver would; returns the number of frames decoded
 * cleanly, stops at the first stream-level error. */
static int walk(const uint8_t *p, size_t len, int *errors)
{
	int good = 0;
	size_t off = 0;
	while (off < len) {
		struct agent_frame f;
		size_t used;
		int r = agent_frame_parse(p + off, len - off, &f, &used);
		if (r == -ENOMSG) {
			off += used;
			continue;
		}
		if (r < 0)
			break;
		assert_true(used <= len - off);
		if (decode_any(&f) == 0)
			good++;
		else
			(*errors)++;
		off += used;
	}
	return good;
}

static void test_roundtrip_stream(void **state)
{
	struct agent_buf b = { 0 };
	build_sample(&b);
	int errors = 0;
	assert_int_equal(walk(b.data, b.len, &errors), 18);
	assert_int_equal(errors, 0);
	agent_buf_free(&b);
}

/* Every frame of the sample with its payload cut short (and the length
 * field adjusted): decoders must refuse or accept cleanly, never overrun.
 * Fixed-layout messages must refuse. */
static void test_truncated_fields(void **state)
{
	struct agent_buf b = { 0 };
	build_sample(&b);
	size_t off = 0;
	while (off < b.len) {
		struct agent_frame f;
		size_t used;
		assert_int_equal(agent_frame_parse(b.data + off, b.len - off, &f, &used), 0);
		for (uint32_t cut = 0; cut < f.len; cut++) {
			/* Copy to an exact-size heap block so ASan sees overruns. */
			uint8_t *copy = malloc(cut ? cut : 1);
			assert_non_null(copy);
			memcpy(copy, f.payload, cut);
			struct agent_frame t = { f.type, cut, copy };
			int r = decode_any(&t);
			switch (f.type) {
			case AGENT_MSG_STDIN:
			case AGENT_MSG_STDOUT:
			case AGENT_MSG_STDERR:
			case AGENT_MSG_DATA:
				assert_int_equal(r, 0);
				break;
			case AGENT_MSG_RESEED:
				/* Shorter seeds are still seeds. */
				assert_true(r == 0 || r == -EBADMSG);
				break;
			default:
				assert_int_equal(r, -EBADMSG);
			}
			free(copy);
		}
		off += used;
	}
	agent_buf_free(&b);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)rng_state;
}

static void test_random_corruption(void **state)
{
	struct agent_buf b = { 0 };
	build_sample(&b);
	uint8_t *copy = malloc(b.len);
	assert_non_null(copy);
	int total_good = 0, total_err = 0;
	for (int iter = 0; iter < 20000; iter++) {
		memcpy(copy, b.data, b.len);
		int flips = 1 + (int)(rnd() % 4);
		for (int i = 0; i < flips; i++) {
			size_t pos = rnd() % b.len;
			if (rnd() & 1)
				copy[pos] ^= (uint8_t)(1u << (rnd() % 8));
			else
				copy[pos] = (uint8_t)rnd();
		}
		/* Also random truncation of the stream. */
		size_t len = (rnd() % 8) ? b.len : rnd() % b.len;
		total_good += walk(copy, len, &total_err);
	}
	/* Corruption was both detected and survived. */
	assert_true(total_err > 0);
	assert_true(total_good > 0);
	free(copy);
	agent_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_exec_roundtrip),
		cmocka_unit_test(test_exec_user_and_rusage),
		cmocka_unit_test(test_exec_too_big),
		cmocka_unit_test(test_small_messages),
		cmocka_unit_test(test_netid),
		cmocka_unit_test(test_frame_errors),
		cmocka_unit_test(test_bad_strings),
		cmocka_unit_test(test_exec_counts),
		cmocka_unit_test(test_roundtrip_stream),
		cmocka_unit_test(test_truncated_fields),
		cmocka_unit_test(test_random_corruption),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
