/* Guest agent wire protocol codec (see proto.h and guest/agent/PROTOCOL.md). */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ byte order */

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---------------------------------------------------------------- buffer */

void agent_buf_free(struct agent_buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void agent_buf_consume(struct agent_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

int agent_buf_reserve(struct agent_buf *b, size_t n)
{
	if (n > SIZE_MAX - b->len)
		return -ENOMEM;
	size_t need = b->len + n;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

/* ----------------------------------------------------------------- types */

static const char *const msg_names[AGENT_MSG_TYPE_MAX + 1] = {
	[AGENT_MSG_HELLO] = "HELLO",       [AGENT_MSG_EXEC] = "EXEC",
	[AGENT_MSG_STARTED] = "STARTED",   [AGENT_MSG_STDIN] = "STDIN",
	[AGENT_MSG_STDIN_EOF] = "STDIN_EOF", [AGENT_MSG_STDOUT] = "STDOUT",
	[AGENT_MSG_STDERR] = "STDERR",     [AGENT_MSG_EXIT] = "EXIT",
	[AGENT_MSG_SIGNAL] = "SIGNAL",     [AGENT_MSG_PUT_FILE] = "PUT_FILE",
	[AGENT_MSG_GET_FILE] = "GET_FILE", [AGENT_MSG_DATA] = "DATA",
	[AGENT_MSG_END] = "END",           [AGENT_MSG_RESEED] = "RESEED",
	[AGENT_MSG_PING] = "PING",         [AGENT_MSG_OK] = "OK",
	[AGENT_MSG_ERROR] = "ERROR",       [AGENT_MSG_NETID] = "NETID",
};

int agent_msg_known(uint8_t type)
{
	return type >= 1 && type <= AGENT_MSG_TYPE_MAX;
}

const char *agent_msg_name(uint8_t type)
{
	return agent_msg_known(type) ? msg_names[type] : "?";
}

/* ---------------------------------------------------------------- frames */

int64_t agent_frame_body_len(const uint8_t len_field[4])
{
	uint32_t n = get_le32(len_field);
	if (n == 0)
		return -EBADMSG;
	if (n > AGENT_FRAME_MAX)
		return -EMSGSIZE;
	return n;
}

int agent_frame_parse(const uint8_t *buf, size_t len, struct agent_frame *f, size_t *consumed)
{
	*consumed = 0;
	if (len < AGENT_FRAME_LEN_SIZE)
		return -EAGAIN;
	int64_t body = agent_frame_body_len(buf);
	if (body < 0)
		return (int)body;
	size_t total = AGENT_FRAME_LEN_SIZE + (size_t)body;
	if (len < total) {
		*consumed = total;
		return -EAGAIN;
	}
	f->type = buf[AGENT_FRAME_LEN_SIZE];
	f->len = (uint32_t)body - 1;
	f->payload = buf + AGENT_FRAME_HDR_SIZE;
	*consumed = total;
	return agent_msg_known(f->type) ? 0 : -ENOMSG;
}

/* -------------------------------------------------------------- encoders */

/* Encoding happens in two steps: compute the payload size, reserve, then
 * write; so a failure never leaves a partial frame behind. */
struct enc {
	uint8_t *p;
};

static int frame_begin(struct agent_buf *b, uint8_t type, size_t payload, struct enc *e)
{
	if (payload > AGENT_PAYLOAD_MAX)
		return -EMSGSIZE;
	int r = agent_buf_reserve(b, AGENT_FRAME_HDR_SIZE + payload);
	if (r < 0)
		return r;
	uint8_t *p = b->data + b->len;
	put_le32(p, (uint32_t)(payload + 1));
	p[4] = type;
	e->p = p + AGENT_FRAME_HDR_SIZE;
	b->len += AGENT_FRAME_HDR_SIZE + payload;
	return 0;
}

static void enc_u32(struct enc *e, uint32_t v)
{
	put_le32(e->p, v);
	e->p += 4;
}

static void enc_u64(struct enc *e, uint64_t v)
{
	put_le64(e->p, v);
	e->p += 8;
}

static void enc_raw(struct enc *e, const void *d, size_t n)
{
	if (n)
		memcpy(e->p, d, n);
	e->p += n;
}

/* A string on the wire: le32 n (including the NUL), n bytes. */
static void enc_str(struct enc *e, const char *s, size_t n)
{
	enc_u32(e, (uint32_t)(n + 1));
	enc_raw(e, s, n);
	*e->p++ = 0;
}

/* Wire size of a string of @n bytes, saturating (callers check the total
 * against AGENT_PAYLOAD_MAX, which is far below the saturation value). */
static size_t str_size(size_t n)
{
	return n > AGENT_PAYLOAD_MAX ? (size_t)AGENT_FRAME_MAX * 2 : 4 + n + 1;
}

int agent_enc_hello(struct agent_buf *b, uint32_t version, uint32_t features,
		    const char *agent_version)
{
	if (!b || !agent_version)
		return -EINVAL;
	size_t vl = strlen(agent_version);
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_HELLO, 8 + str_size(vl), &e);
	if (r < 0)
		return r;
	enc_u32(&e, version);
	enc_u32(&e, features);
	enc_str(&e, agent_version, vl);
	return 0;
}

/* Payload size of an EXEC, or 0 if a string is missing/empty where it must
 * not be, or SIZE_MAX past the payload limit. */
static size_t exec_size(const char *const *argv, uint32_t argc, const char *const *envp,
			uint32_t envc, const char *cwd, const char *user)
{
	size_t total = 12 + str_size(strlen(cwd)) + (user ? str_size(strlen(user)) : 0);
	for (uint32_t i = 0; i < argc + envc; i++) {
		const char *s = i < argc ? argv[i] : envp[i - argc];
		if (!s || (i == 0 && !*s))
			return 0;
		total += str_size(strlen(s));
		if (total > AGENT_PAYLOAD_MAX)
			return SIZE_MAX;
	}
	return total;
}

int agent_enc_exec(struct agent_buf *b, uint32_t flags, const char *const *argv, uint32_t argc,
		   const char *const *envp, uint32_t envc, const char *cwd, const char *user)
{
	if (!b || !argv || argc == 0 || (envc && !envp) || (flags & ~AGENT_EXEC_FLAGS_ALL))
		return -EINVAL;
	if (!(flags & AGENT_EXEC_USER) != !user ||
	    (user && (!*user || strlen(user) > AGENT_USER_MAX)))
		return -EINVAL;
	if (argc > AGENT_MAX_ARGS || envc > AGENT_MAX_ENV)
		return -E2BIG;
	if (!cwd)
		cwd = "";
	size_t total = exec_size(argv, argc, envp, envc, cwd, user);
	if (total == 0)
		return -EINVAL;
	if (total == SIZE_MAX)
		return -EMSGSIZE;
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_EXEC, total, &e);
	if (r < 0)
		return r;
	enc_u32(&e, flags);
	enc_u32(&e, argc);
	enc_u32(&e, envc);
	enc_str(&e, cwd, strlen(cwd));
	for (uint32_t i = 0; i < argc; i++)
		enc_str(&e, argv[i], strlen(argv[i]));
	for (uint32_t i = 0; i < envc; i++)
		enc_str(&e, envp[i], strlen(envp[i]));
	if (user)
		enc_str(&e, user, strlen(user));
	return 0;
}

static int enc_one_u32(struct agent_buf *b, uint8_t type, uint32_t v)
{
	if (!b)
		return -EINVAL;
	struct enc e;
	int r = frame_begin(b, type, 4, &e);
	if (r < 0)
		return r;
	enc_u32(&e, v);
	return 0;
}

static int enc_one_u64(struct agent_buf *b, uint8_t type, uint64_t v)
{
	if (!b)
		return -EINVAL;
	struct enc e;
	int r = frame_begin(b, type, 8, &e);
	if (r < 0)
		return r;
	enc_u64(&e, v);
	return 0;
}

int agent_enc_started(struct agent_buf *b, uint32_t pid)
{
	return enc_one_u32(b, AGENT_MSG_STARTED, pid);
}

int agent_enc_bytes(struct agent_buf *b, uint8_t type, const void *data, size_t len)
{
	if (!b || (len && !data))
		return -EINVAL;
	if (type != AGENT_MSG_STDIN && type != AGENT_MSG_STDOUT && type != AGENT_MSG_STDERR &&
	    type != AGENT_MSG_DATA)
		return -EINVAL;
	struct enc e;
	int r = frame_begin(b, type, len, &e);
	if (r < 0)
		return r;
	enc_raw(&e, data, len);
	return 0;
}

int agent_enc_empty(struct agent_buf *b, uint8_t type)
{
	if (!b || (type != AGENT_MSG_STDIN_EOF && type != AGENT_MSG_PING))
		return -EINVAL;
	struct enc e;
	return frame_begin(b, type, 0, &e);
}

int agent_enc_exit(struct agent_buf *b, int32_t exit_code, int32_t signo, uint32_t flags,
		   const struct agent_rusage *ru)
{
	if (!b || (flags & AGENT_EXIT_RUSAGE))
		return -EINVAL;
	if (ru)
		flags |= AGENT_EXIT_RUSAGE;
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_EXIT, ru ? 36 : 12, &e);
	if (r < 0)
		return r;
	enc_u32(&e, (uint32_t)exit_code);
	enc_u32(&e, (uint32_t)signo);
	enc_u32(&e, flags);
	if (ru) {
		enc_u64(&e, ru->max_rss_kib);
		enc_u64(&e, ru->user_us);
		enc_u64(&e, ru->sys_us);
	}
	return 0;
}

int agent_enc_signal(struct agent_buf *b, uint32_t signo)
{
	return enc_one_u32(b, AGENT_MSG_SIGNAL, signo);
}

static int enc_file(struct agent_buf *b, uint8_t type, const char *path, int with_mode,
		    uint32_t mode, uint32_t flags)
{
	if (!b || !path || !*path)
		return -EINVAL;
	size_t pl = strlen(path);
	struct enc e;
	int r = frame_begin(b, type, (with_mode ? 8 : 4) + str_size(pl), &e);
	if (r < 0)
		return r;
	if (with_mode)
		enc_u32(&e, mode);
	enc_u32(&e, flags);
	enc_str(&e, path, pl);
	return 0;
}

int agent_enc_put_file(struct agent_buf *b, const char *path, uint32_t mode, uint32_t flags)
{
	return enc_file(b, AGENT_MSG_PUT_FILE, path, 1, mode, flags);
}

int agent_enc_get_file(struct agent_buf *b, const char *path, uint32_t flags)
{
	return enc_file(b, AGENT_MSG_GET_FILE, path, 0, 0, flags);
}

int agent_enc_end(struct agent_buf *b, uint64_t total)
{
	return enc_one_u64(b, AGENT_MSG_END, total);
}

int agent_enc_reseed(struct agent_buf *b, uint32_t flags, const void *seed, size_t len)
{
	if (!b || !seed || len == 0)
		return -EINVAL;
	if (len > AGENT_RESEED_MAX)
		return -E2BIG;
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_RESEED, 4 + len, &e);
	if (r < 0)
		return r;
	enc_u32(&e, flags);
	enc_raw(&e, seed, len);
	return 0;
}

int agent_enc_netid(struct agent_buf *b, uint32_t flags, const uint8_t *macs, uint32_t n)
{
	if (!b || !macs || n == 0)
		return -EINVAL;
	if (n > AGENT_NETID_MAX)
		return -E2BIG;
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_NETID, 8 + 6 * (size_t)n, &e);
	if (r < 0)
		return r;
	enc_u32(&e, flags);
	enc_u32(&e, n);
	enc_raw(&e, macs, 6 * (size_t)n);
	return 0;
}

int agent_enc_ok(struct agent_buf *b, uint64_t value)
{
	return enc_one_u64(b, AGENT_MSG_OK, value);
}

int agent_enc_error(struct agent_buf *b, uint32_t err, const char *msg)
{
	if (!b)
		return -EINVAL;
	if (!msg)
		msg = "";
	size_t ml = strnlen(msg, AGENT_ERRMSG_MAX);
	struct enc e;
	int r = frame_begin(b, AGENT_MSG_ERROR, 4 + str_size(ml), &e);
	if (r < 0)
		return r;
	enc_u32(&e, err);
	enc_str(&e, msg, ml);
	return 0;
}

/* -------------------------------------------------------------- decoders */

struct dec {
	const uint8_t *p;
	size_t left;
};

static void dec_init(struct dec *d, const struct agent_frame *f)
{
	d->p = f->payload;
	d->left = f->len;
}

static int dec_u32(struct dec *d, uint32_t *v)
{
	if (d->left < 4)
		return -EBADMSG;
	*v = get_le32(d->p);
	d->p += 4;
	d->left -= 4;
	return 0;
}

static int dec_u64(struct dec *d, uint64_t *v)
{
	if (d->left < 8)
		return -EBADMSG;
	*v = get_le64(d->p);
	d->p += 8;
	d->left -= 8;
	return 0;
}

/* A string: le32 n >= 1, n bytes, the last one NUL and no other NUL. */
static int dec_str(struct dec *d, const char **s)
{
	uint32_t n;
	if (dec_u32(d, &n) < 0)
		return -EBADMSG;
	if (n == 0 || n > d->left)
		return -EBADMSG;
	if (d->p[n - 1] != 0 || memchr(d->p, 0, n - 1))
		return -EBADMSG;
	*s = (const char *)d->p;
	d->p += n;
	d->left -= n;
	return 0;
}

static int dec_end(const struct dec *d)
{
	return d->left ? -EBADMSG : 0;
}

static int check_type(const struct agent_frame *f, uint8_t type)
{
	if (!f || (f->len && !f->payload))
		return -EINVAL;
	return f->type == type ? 0 : -EBADMSG;
}

int agent_dec_hello(const struct agent_frame *f, struct agent_hello *out)
{
	int r = check_type(f, AGENT_MSG_HELLO);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	if (dec_u32(&d, &out->version) < 0 || dec_u32(&d, &out->features) < 0 ||
	    dec_str(&d, &out->agent_version) < 0)
		return -EBADMSG;
	return dec_end(&d);
}

int agent_dec_exec(const struct agent_frame *f, struct agent_exec *out)
{
	memset(out, 0, sizeof(*out));
	int r = check_type(f, AGENT_MSG_EXEC);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	uint32_t flags, argc, envc;
	const char *cwd;
	if (dec_u32(&d, &flags) < 0 || dec_u32(&d, &argc) < 0 || dec_u32(&d, &envc) < 0 ||
	    dec_str(&d, &cwd) < 0)
		return -EBADMSG;
	if (flags & ~AGENT_EXEC_FLAGS_ALL)
		return -EBADMSG;
	if (argc == 0)
		return -EBADMSG;
	if (argc > AGENT_MAX_ARGS || envc > AGENT_MAX_ENV)
		return -E2BIG;
	/* Each string needs at least 5 bytes: reject impossible counts before
	 * allocating anything. */
	if ((uint64_t)(argc + envc) * 5 > d.left)
		return -EBADMSG;
	const char **v = calloc((size_t)argc + envc + 2, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < argc; i++) {
		if (dec_str(&d, &v[i]) < 0)
			goto bad;
	}
	if (!*v[0])
		goto bad;
	for (uint32_t i = 0; i < envc; i++) {
		if (dec_str(&d, &v[argc + 1 + i]) < 0)
			goto bad;
	}
	const char *user = NULL;
	if ((flags & AGENT_EXEC_USER) &&
	    (dec_str(&d, &user) < 0 || !*user || strlen(user) > AGENT_USER_MAX))
		goto bad;
	if (dec_end(&d) < 0)
		goto bad;
	out->flags = flags;
	out->user = user;
	out->argc = argc;
	out->envc = envc;
	out->cwd = cwd;
	out->argv = v;
	out->envp = v + argc + 1;
	return 0;
bad:
	free(v);
	return -EBADMSG;
}

void agent_exec_free(struct agent_exec *e)
{
	if (!e)
		return;
	free(e->argv);
	e->argv = e->envp = NULL;
}

int agent_dec_u32(const struct agent_frame *f, uint32_t *v)
{
	if (!f || (f->type != AGENT_MSG_STARTED && f->type != AGENT_MSG_SIGNAL))
		return -EBADMSG;
	struct dec d;
	dec_init(&d, f);
	if (dec_u32(&d, v) < 0)
		return -EBADMSG;
	return dec_end(&d);
}

int agent_dec_u64(const struct agent_frame *f, uint64_t *v)
{
	if (!f || (f->type != AGENT_MSG_END && f->type != AGENT_MSG_OK))
		return -EBADMSG;
	struct dec d;
	dec_init(&d, f);
	if (dec_u64(&d, v) < 0)
		return -EBADMSG;
	return dec_end(&d);
}

int agent_dec_empty(const struct agent_frame *f)
{
	if (!f || (f->type != AGENT_MSG_STDIN_EOF && f->type != AGENT_MSG_PING))
		return -EBADMSG;
	return f->len ? -EBADMSG : 0;
}

int agent_dec_exit(const struct agent_frame *f, struct agent_exit *out)
{
	int r = check_type(f, AGENT_MSG_EXIT);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	uint32_t code, sig, flags;
	if (dec_u32(&d, &code) < 0 || dec_u32(&d, &sig) < 0 || dec_u32(&d, &flags) < 0)
		return -EBADMSG;
	memset(&out->ru, 0, sizeof(out->ru));
	if ((flags & AGENT_EXIT_RUSAGE) &&
	    (dec_u64(&d, &out->ru.max_rss_kib) < 0 || dec_u64(&d, &out->ru.user_us) < 0 ||
	     dec_u64(&d, &out->ru.sys_us) < 0))
		return -EBADMSG;
	if (dec_end(&d) < 0)
		return -EBADMSG;
	/* Exactly one of "exited with code 0..255" or "killed by signal". */
	if (sig == 0 ? code > 255 : (sig > 127 || code != UINT32_MAX))
		return -EBADMSG;
	out->exit_code = (int32_t)code;
	out->signo = (int32_t)sig;
	out->flags = flags;
	return 0;
}

static int dec_file(const struct agent_frame *f, uint8_t type, struct agent_file_req *out)
{
	int r = check_type(f, type);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	out->mode = 0;
	if (type == AGENT_MSG_PUT_FILE && dec_u32(&d, &out->mode) < 0)
		return -EBADMSG;
	if (dec_u32(&d, &out->flags) < 0 || dec_str(&d, &out->path) < 0)
		return -EBADMSG;
	if (!*out->path)
		return -EBADMSG;
	return dec_end(&d);
}

int agent_dec_put_file(const struct agent_frame *f, struct agent_file_req *out)
{
	return dec_file(f, AGENT_MSG_PUT_FILE, out);
}

int agent_dec_get_file(const struct agent_frame *f, struct agent_file_req *out)
{
	return dec_file(f, AGENT_MSG_GET_FILE, out);
}

int agent_dec_reseed(const struct agent_frame *f, struct agent_reseed *out)
{
	int r = check_type(f, AGENT_MSG_RESEED);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	if (dec_u32(&d, &out->flags) < 0)
		return -EBADMSG;
	if (d.left == 0 || d.left > AGENT_RESEED_MAX)
		return -EBADMSG;
	out->data = d.p;
	out->len = (uint32_t)d.left;
	return 0;
}

int agent_dec_netid(const struct agent_frame *f, struct agent_netid *out)
{
	int r = check_type(f, AGENT_MSG_NETID);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	if (dec_u32(&d, &out->flags) < 0 || dec_u32(&d, &out->n) < 0)
		return -EBADMSG;
	if (out->n == 0 || out->n > AGENT_NETID_MAX || d.left != 6 * (size_t)out->n)
		return -EBADMSG;
	out->macs = d.p;
	return 0;
}

int agent_dec_error(const struct agent_frame *f, struct agent_error *out)
{
	int r = check_type(f, AGENT_MSG_ERROR);
	if (r < 0)
		return r;
	struct dec d;
	dec_init(&d, f);
	if (dec_u32(&d, &out->err) < 0 || dec_str(&d, &out->msg) < 0)
		return -EBADMSG;
	if (out->err == 0 || out->err >= 4096)
		return -EBADMSG;
	return dec_end(&d);
}
