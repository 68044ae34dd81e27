/*
 * Guest agent wire protocol: frame codec shared by the host library
 * (lib/agent/client.c) and the guest agent (guest/agent/agent.c).
 * The protocol itself is described in guest/agent/PROTOCOL.md.
 *
 * Pure C: no I/O, no globals, no printing. Encoders append complete frames
 * to a growable buffer; decoders validate every length and return pointers
 * into the frame they were given (valid while that buffer is).
 *
 * Errors (negative errno):
 *   -EAGAIN    the buffer does not hold a complete frame yet
 *   -EMSGSIZE  a frame (declared or to be encoded) is larger than
 *              AGENT_FRAME_MAX
 *   -ENOMSG    unknown message type (the frame is well delimited and can be
 *              skipped: agent_frame_parse() still fills *consumed)
 *   -EBADMSG   malformed frame or payload (empty body, truncated field,
 *              trailing bytes, bad string, bad count)
 *   -E2BIG     too many argv/env entries
 *   -EINVAL    bad argument to an encoder
 *   -ENOMEM    allocation failed
 */
#ifndef MICROVM_AGENT_PROTO_H
#define MICROVM_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Protocol version: major << 16 | minor. Peers must agree on the major;
 * minor additions are backward compatible. */
#define AGENT_PROTO_MAJOR 1
#define AGENT_PROTO_MINOR 2
#define AGENT_PROTO_VERSION ((AGENT_PROTO_MAJOR << 16) | AGENT_PROTO_MINOR)

/* Frame: le32 length (bytes that follow it: type + payload), u8 type,
 * payload. 1 <= length <= AGENT_FRAME_MAX. */
#define AGENT_FRAME_LEN_SIZE 4u
#define AGENT_FRAME_HDR_SIZE 5u
#define AGENT_FRAME_MAX (1u << 20)
#define AGENT_PAYLOAD_MAX (AGENT_FRAME_MAX - 1u)

/* Largest data chunk a sender puts into one STDIN/STDOUT/STDERR/DATA frame
 * (receivers accept anything up to AGENT_PAYLOAD_MAX). */
#define AGENT_CHUNK (64u * 1024u)

/* Limits on EXEC. */
#define AGENT_MAX_ARGS 4096u
#define AGENT_MAX_ENV 4096u
/* Limit on RESEED payload bytes. */
#define AGENT_RESEED_MAX 4096u
/* Most MAC addresses in one NETID. */
#define AGENT_NETID_MAX 16u

/* Message types. */
enum {
	AGENT_MSG_HELLO = 0x01,     /* A->H  u32 version, u32 features, str agent_version */
	AGENT_MSG_EXEC = 0x02,      /* H->A  u32 flags, u32 argc, u32 envc, str cwd, argv, env */
	AGENT_MSG_STARTED = 0x03,   /* A->H  u32 pid */
	AGENT_MSG_STDIN = 0x04,     /* H->A  bytes */
	AGENT_MSG_STDIN_EOF = 0x05, /* H->A  empty */
	AGENT_MSG_STDOUT = 0x06,    /* A->H  bytes */
	AGENT_MSG_STDERR = 0x07,    /* A->H  bytes */
	AGENT_MSG_EXIT = 0x08,      /* A->H  i32 exit_code, i32 signal, u32 flags */
	AGENT_MSG_SIGNAL = 0x09,    /* H->A  u32 signo */
	AGENT_MSG_PUT_FILE = 0x0a,  /* H->A  u32 mode, u32 flags, str path */
	AGENT_MSG_GET_FILE = 0x0b,  /* H->A  u32 flags, str path */
	AGENT_MSG_DATA = 0x0c,      /* both  bytes (file contents) */
	AGENT_MSG_END = 0x0d,       /* both  u64 total bytes */
	AGENT_MSG_RESEED = 0x0e,    /* H->A  u32 flags, bytes */
	AGENT_MSG_PING = 0x0f,      /* H->A  empty */
	AGENT_MSG_OK = 0x10,        /* A->H  u64 value */
	AGENT_MSG_ERROR = 0x11,     /* A->H  u32 errno, str message */
	AGENT_MSG_NETID = 0x12,     /* H->A  (1.2) u32 flags, u32 n, n x 6-byte MAC */
	AGENT_MSG_TYPE_MAX = 0x12
};

/* EXEC flags. */
#define AGENT_EXEC_STDIN 0x1u /* stdin comes as STDIN frames (else /dev/null) */
#define AGENT_EXEC_ENV 0x2u   /* use exactly the given env (else the default) */
#define AGENT_EXEC_USER 0x4u   /* (1.1) a str user follows the env entries */
#define AGENT_EXEC_RUSAGE 0x8u /* (1.1) EXIT carries the command's resource use */
#define AGENT_EXEC_FLAGS_ALL (AGENT_EXEC_STDIN | AGENT_EXEC_ENV | AGENT_EXEC_USER | AGENT_EXEC_RUSAGE)
/* Longest user spec ("name[:group]", "uid[:gid]"). */
#define AGENT_USER_MAX 256u

/* EXIT flags. */
#define AGENT_EXIT_CORE 0x1u   /* the signal dumped core */
#define AGENT_EXIT_RUSAGE 0x2u /* (1.1) u64 max_rss_kib, u64 user_us, u64 sys_us follow */
#define AGENT_EXIT_FLAGS_ALL (AGENT_EXIT_CORE | AGENT_EXIT_RUSAGE)

/* One frame, as parsed from a buffer. payload points into that buffer. */
struct agent_frame {
	uint8_t type;
	uint32_t len; /* payload length */
	const uint8_t *payload;
};

/* Growable output buffer. Zero-initialise; free with agent_buf_free(). */
struct agent_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

void agent_buf_free(struct agent_buf *b);
/* Drop the first @n bytes (n <= len). */
void agent_buf_consume(struct agent_buf *b, size_t n);
/* Make room for @n more bytes. 0 or -ENOMEM. */
int agent_buf_reserve(struct agent_buf *b, size_t n);

/* Name of a message type, "?" if unknown. Static string. */
const char *agent_msg_name(uint8_t type);
/* 1 if @type is a known message type. */
int agent_msg_known(uint8_t type);

/*
 * Check a frame's 4-byte length field. Returns the body length (type +
 * payload, 1..AGENT_FRAME_MAX) or -EMSGSIZE (too big) / -EBADMSG (zero).
 */
int64_t agent_frame_body_len(const uint8_t len_field[4]);

/*
 * Parse the frame at the start of @buf (@len bytes). On success fills @f
 * and *@consumed (header + body) and returns 0. -EAGAIN: incomplete
 * (*consumed = bytes needed in all, when the length is known, else 0).
 * -ENOMSG: unknown type (@f and *@consumed filled so the caller may skip it).
 * -EMSGSIZE, -EBADMSG: the stream is unusable.
 */
int agent_frame_parse(const uint8_t *buf, size_t len, struct agent_frame *f, size_t *consumed);

/* ---- encoders: append one complete frame to @b; on error @b is unchanged */

int agent_enc_hello(struct agent_buf *b, uint32_t version, uint32_t features,
		    const char *agent_version);
/* @argv: argc >= 1 strings; @envp: envc strings (may be 0). @cwd may be
 * NULL or "" (agent default). Strings must be non-empty for argv[0].
 * @user: non-empty (at most AGENT_USER_MAX bytes) exactly when @flags has
 * AGENT_EXEC_USER, else NULL. */
int agent_enc_exec(struct agent_buf *b, uint32_t flags, const char *const *argv, uint32_t argc,
		   const char *const *envp, uint32_t envc, const char *cwd, const char *user);
int agent_enc_started(struct agent_buf *b, uint32_t pid);
/* STDIN, STDOUT, STDERR, DATA: raw bytes (len <= AGENT_PAYLOAD_MAX). */
int agent_enc_bytes(struct agent_buf *b, uint8_t type, const void *data, size_t len);
/* STDIN_EOF, PING: no payload. */
int agent_enc_empty(struct agent_buf *b, uint8_t type);
/* A command's resource use as the guest kernel measured it (wait4()). */
struct agent_rusage {
	uint64_t max_rss_kib; /* peak resident set of the command's largest process */
	uint64_t user_us, sys_us;
};
/* @ru: NULL, or the resource use to send (sets AGENT_EXIT_RUSAGE). */
int agent_enc_exit(struct agent_buf *b, int32_t exit_code, int32_t signo, uint32_t flags,
		   const struct agent_rusage *ru);
int agent_enc_signal(struct agent_buf *b, uint32_t signo);
int agent_enc_put_file(struct agent_buf *b, const char *path, uint32_t mode, uint32_t flags);
int agent_enc_get_file(struct agent_buf *b, const char *path, uint32_t flags);
int agent_enc_end(struct agent_buf *b, uint64_t total);
int agent_enc_reseed(struct agent_buf *b, uint32_t flags, const void *seed, size_t len);
/* @n (1..AGENT_NETID_MAX) MAC addresses, 6 bytes each, in @macs. */
int agent_enc_netid(struct agent_buf *b, uint32_t flags, const uint8_t *macs, uint32_t n);
int agent_enc_ok(struct agent_buf *b, uint64_t value);
/* @err: positive errno. @msg may be NULL; truncated to AGENT_ERRMSG_MAX. */
#define AGENT_ERRMSG_MAX 1024u
int agent_enc_error(struct agent_buf *b, uint32_t err, const char *msg);

/* ---- decoders: validate @f (whose type must match) and fill the struct */

struct agent_hello {
	uint32_t version;
	uint32_t features;
	const char *agent_version;
};
int agent_dec_hello(const struct agent_frame *f, struct agent_hello *out);

struct agent_exec {
	uint32_t flags;
	uint32_t argc;
	uint32_t envc;
	const char *cwd;   /* "" = default */
	const char **argv; /* argc entries + NULL; malloc'd (agent_exec_free) */
	const char **envp; /* envc entries + NULL; points into argv's block */
	const char *user;  /* AGENT_EXEC_USER: non-empty; else NULL */
};
/* The string pointers point into @f's payload. Free with agent_exec_free. */
int agent_dec_exec(const struct agent_frame *f, struct agent_exec *out);
void agent_exec_free(struct agent_exec *e);

int agent_dec_u32(const struct agent_frame *f, uint32_t *v);     /* STARTED, SIGNAL */
int agent_dec_u64(const struct agent_frame *f, uint64_t *v);     /* END, OK */
int agent_dec_empty(const struct agent_frame *f);                /* STDIN_EOF, PING */

struct agent_exit {
	int32_t exit_code;
	int32_t signo;
	uint32_t flags;
	struct agent_rusage ru; /* zero unless flags has AGENT_EXIT_RUSAGE */
};
int agent_dec_exit(const struct agent_frame *f, struct agent_exit *out);

struct agent_file_req {
	uint32_t mode;  /* PUT_FILE only */
	uint32_t flags;
	const char *path;
};
int agent_dec_put_file(const struct agent_frame *f, struct agent_file_req *out);
int agent_dec_get_file(const struct agent_frame *f, struct agent_file_req *out);

struct agent_reseed {
	uint32_t flags;
	const uint8_t *data;
	uint32_t len;
};
int agent_dec_reseed(const struct agent_frame *f, struct agent_reseed *out);

struct agent_netid {
	uint32_t flags;
	uint32_t n;          /* 1..AGENT_NETID_MAX */
	const uint8_t *macs; /* n x 6 bytes, in the frame */
};
int agent_dec_netid(const struct agent_frame *f, struct agent_netid *out);

struct agent_error {
	uint32_t err;
	const char *msg;
};
int agent_dec_error(const struct agent_frame *f, struct agent_error *out);

#endif
