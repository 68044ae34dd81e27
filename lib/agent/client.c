/* Host side of the guest agent protocol (include/microvm_agent.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "abi.h"
#include "microvm.h"
#include "microvm_agent.h"
#include "proto.h"

_Static_assert(MICROVM_AGENT_PROTOCOL_VERSION == AGENT_PROTO_VERSION,
	       "public and wire protocol versions differ");

/* How long the agent may take to confirm a kill (timeout, cancel) before
 * the exec fails with -ETIMEDOUT. */
#define KILL_GRACE_MS 5000
/* Retry delays of microvm_agent_connect() while the guest boots. */
#define CONNECT_RETRY_MIN_MS 5
#define CONNECT_RETRY_MAX_MS 100
/* Longest wait for the guest to answer one vsock connection request. */
#define CONNECT_ATTEMPT_MS 2000
/* Longest wait for HELLO on one accepted stream before trying another. */
#define HELLO_ATTEMPT_MS 10000

struct microvm_agent {
	int fd;
	bool broken;
	int io_timeout;
	uint32_t proto;
	char *version;
	struct agent_buf in; /* received bytes; frames parsed from in_off */
	size_t in_off;
	size_t in_frame; /* bytes of the frame last returned, dropped next time */
	struct agent_buf out; /* bytes to send */
	char err[512];

	/* microvm_agent_kill() support. */
	pthread_mutex_t lock;
	bool exec_running;
	uint64_t pending_sigs; /* bit n-1 = signal n */
	int wake_fd;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until @deadline (-1 = none), for poll(). */
static int left_ms(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t l = deadline - now_ms();
	if (l <= 0)
		return 0;
	return l > INT32_MAX ? INT32_MAX : (int)l;
}

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int fail(microvm_agent *a, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(microvm_agent *a, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->err, sizeof(a->err), fmt, ap);
	va_end(ap);
	return err;
}

/* A failure that leaves the stream in an unknown state. */
static int broken(microvm_agent *a, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int broken(microvm_agent *a, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(a->err, sizeof(a->err), fmt, ap);
	va_end(ap);
	a->broken = true;
	return err;
}

static int check_usable(microvm_agent *a)
{
	if (a->broken)
		return fail(a, -ENOTCONN, "connection unusable after an earlier error");
	a->err[0] = 0;
	return 0;
}

/* ------------------------------------------------------------ raw I/O */

/* Send what can be sent now. 0, or -errno (connection lost). */
static int send_some(microvm_agent *a)
{
	while (a->out.len) {
		ssize_t n = send(a->fd, a->out.data, a->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return broken(a, -errno, "send to agent: %s", strerror(errno));
		}
		agent_buf_consume(&a->out, (size_t)n);
	}
	return 0;
}

/* Read what is available now. >0 bytes read, 0 nothing available,
 * -ECONNRESET at end of file, -errno. */
static int recv_some(microvm_agent *a)
{
	if (a->in_off && a->in_off == a->in.len) {
		a->in.len = a->in_off = 0;
	} else if (a->in_off) {
		agent_buf_consume(&a->in, a->in_off);
		a->in_off = 0;
	}
	if (agent_buf_reserve(&a->in, AGENT_CHUNK) < 0)
		return broken(a, -ENOMEM, "out of memory");
	for (;;) {
		ssize_t n = recv(a->fd, a->in.data + a->in.len, a->in.cap - a->in.len, MSG_DONTWAIT);
		if (n > 0) {
			a->in.len += (size_t)n;
			return (int)(n > INT32_MAX ? INT32_MAX : n);
		}
		if (n == 0)
			return broken(a, -ECONNRESET, "agent closed the connection");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return broken(a, -errno, "receive from agent: %s", strerror(errno));
	}
}

/* Take the next complete frame out of the input buffer, if any: 1 = got
 * one (valid until the next call), 0 = need more bytes, <0 = protocol
 * error. Frames of unknown types are skipped. */
static int take_frame(microvm_agent *a, struct agent_frame *f)
{
	a->in_off += a->in_frame;
	a->in_frame = 0;
	for (;;) {
		size_t used;
		int r = agent_frame_parse(a->in.data + a->in_off, a->in.len - a->in_off, f, &used);
		if (r == -EAGAIN)
			return 0;
		if (r == -ENOMSG) { /* newer agent: skip what we do not know */
			a->in_off += used;
			continue;
		}
		if (r < 0)
			return broken(a, -EPROTO, "malformed frame from agent (%s)", strerror(-r));
		a->in_frame = used;
		return 1;
	}
}

/* Send all pending bytes, waiting at most @timeout_ms without progress. */
static int flush_out(microvm_agent *a, int timeout_ms)
{
	while (a->out.len) {
		int r = send_some(a);
		if (r < 0)
			return r;
		if (!a->out.len)
			break;
		struct pollfd p = { a->fd, POLLOUT, 0 };
		int pr = poll(&p, 1, timeout_ms);
		if (pr < 0 && errno != EINTR)
			return broken(a, -errno, "poll: %s", strerror(errno));
		if (pr == 0)
			return broken(a, -ETIMEDOUT, "timed out sending to the agent");
	}
	return 0;
}

/* Wait for the next frame, at most @timeout_ms without progress. */
static int recv_frame(microvm_agent *a, struct agent_frame *f, int timeout_ms)
{
	for (;;) {
		int r = take_frame(a, f);
		if (r != 0)
			return r < 0 ? r : 0;
		struct pollfd p = { a->fd, POLLIN, 0 };
		int pr = poll(&p, 1, timeout_ms);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return broken(a, -errno, "poll: %s", strerror(errno));
		}
		if (pr == 0)
			return broken(a, -ETIMEDOUT, "timed out waiting for the agent");
		r = recv_some(a);
		if (r < 0)
			return r;
	}
}

/* An ERROR frame from the agent: -errno, connection still usable. */
static int agent_error(microvm_agent *a, const struct agent_frame *f)
{
	struct agent_error e;
	if (agent_dec_error(f, &e) < 0)
		return broken(a, -EPROTO, "malformed ERROR frame from agent");
	return fail(a, -(int)e.err, "agent: %s", e.msg);
}

static int unexpected(microvm_agent *a, const struct agent_frame *f, const char *during)
{
	return broken(a, -EPROTO, "unexpected %s frame from agent during %s",
		      agent_msg_name(f->type), during);
}

/* Map encoder errors to the API's. */
static int enc_fail(microvm_agent *a, int r, const char *what)
{
	if (r == -EMSGSIZE || r == -E2BIG)
		return fail(a, -E2BIG, "%s: request larger than the protocol allows", what);
	return fail(a, r, "%s: %s", what, strerror(-r));
}

/* Wait for OK (value stored) or ERROR. */
static int wait_ok(microvm_agent *a, const char *during, uint64_t *value)
{
	struct agent_frame f;
	int r = recv_frame(a, &f, a->io_timeout);
	if (r < 0)
		return r;
	if (f.type == AGENT_MSG_ERROR)
		return agent_error(a, &f);
	if (f.type != AGENT_MSG_OK)
		return unexpected(a, &f, during);
	uint64_t v;
	if (agent_dec_u64(&f, &v) < 0)
		return broken(a, -EPROTO, "malformed OK frame from agent");
	if (value)
		*value = v;
	return 0;
}

/* ------------------------------------------------------------- lifecycle */

MICROVM_API int microvm_agent_open_fd(int fd, int timeout_ms, microvm_agent **out)
{
	if (out)
		*out = NULL;
	if (fd < 0)
		return -EINVAL;
	if (!out || timeout_ms < -1) {
		close(fd);
		return -EINVAL;
	}
	int type = 0;
	socklen_t tl = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		close(fd);
		return -ENOTSOCK;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	microvm_agent *a = calloc(1, sizeof(*a));
	if (!a) {
		close(fd);
		return -ENOMEM;
	}
	a->fd = fd;
	a->io_timeout = MICROVM_AGENT_DEFAULT_IO_TIMEOUT_MS;
	a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->wake_fd < 0) {
		int err = -errno;
		close(fd);
		free(a);
		return err;
	}
	pthread_mutex_init(&a->lock, NULL);

	struct agent_frame f;
	int r = recv_frame(a, &f, timeout_ms);
	struct agent_hello h;
	if (r == 0 && (f.type != AGENT_MSG_HELLO || agent_dec_hello(&f, &h) < 0))
		r = -EPROTO;
	if (r == 0 && (h.version >> 16) != AGENT_PROTO_MAJOR)
		r = -EPROTONOSUPPORT;
	if (r == 0) {
		a->proto = h.version;
		a->version = strdup(h.agent_version);
		if (!a->version)
			r = -ENOMEM;
	}
	if (r < 0) {
		microvm_agent_close(a);
		return r;
	}
	*out = a;
	return 0;
}

/* Tell a 1.2 agent the MAC addresses of @vm's interfaces (a restored or
 * forked clone has new ones, see "Clones on the network" in microvm.h):
 * it gives them to the guest's interfaces before the first command. */
static int send_netid(microvm *vm, microvm_agent *a)
{
	uint8_t macs[AGENT_NETID_MAX][6];
	uint32_t n = 0;
	while (n < AGENT_NETID_MAX && microvm_net_mac(vm, n, macs[n]) == 0)
		n++;
	if (n == 0 || (a->proto & 0xffff) < 2)
		return 0;
	int r = agent_enc_netid(&a->out, 0, &macs[0][0], n);
	if (r < 0)
		return enc_fail(a, r, "netid");
	r = flush_out(a, a->io_timeout);
	return r < 0 ? r : wait_ok(a, "NETID", NULL);
}

MICROVM_API int microvm_agent_connect(microvm *vm, int timeout_ms, microvm_agent **out)
{
	if (out)
		*out = NULL;
	if (!vm || !out || timeout_ms < -1)
		return -EINVAL;
	int64_t deadline = deadline_after(timeout_ms);
	int delay = CONNECT_RETRY_MIN_MS;
	for (;;) {
		/* Each attempt is bounded, so a request the guest never answered
		 * (its driver not up yet, or the packet lost) is sent again. */
		int l = left_ms(deadline);
		int attempt = l < 0 || l > CONNECT_ATTEMPT_MS ? CONNECT_ATTEMPT_MS : l;
		int fd = microvm_vsock_connect(vm, MICROVM_AGENT_PORT, attempt);
		if (fd >= 0) {
			l = left_ms(deadline);
			int hello = l < 0 || l > HELLO_ATTEMPT_MS ? HELLO_ATTEMPT_MS : l;
			int r = microvm_agent_open_fd(fd, hello, out);
			/* Closed before HELLO: the agent is starting up; no HELLO
			 * in time: try a new stream. */
			if (r == 0 && (r = send_netid(vm, *out)) < 0) {
				microvm_agent_close(*out);
				*out = NULL;
				return r;
			}
			if (r != -ECONNRESET && r != -EPIPE && !(r == -ETIMEDOUT && l != hello))
				return r;
		} else if (fd != -ECONNREFUSED && fd != -ECONNRESET && fd != -ETIMEDOUT) {
			return fd;
		}
		l = left_ms(deadline);
		if (l == 0)
			return -ETIMEDOUT;
		int d = l < 0 || l > delay ? delay : l;
		nanosleep(&(struct timespec){ d / 1000, (long)(d % 1000) * 1000000L }, NULL);
		delay = delay * 2 > CONNECT_RETRY_MAX_MS ? CONNECT_RETRY_MAX_MS : delay * 2;
	}
}

MICROVM_API void microvm_agent_close(microvm_agent *a)
{
	if (!a)
		return;
	close(a->fd);
	if (a->wake_fd >= 0)
		close(a->wake_fd);
	pthread_mutex_destroy(&a->lock);
	agent_buf_free(&a->in);
	agent_buf_free(&a->out);
	free(a->version);
	free(a);
}

MICROVM_API const char *microvm_agent_last_error(const microvm_agent *a)
{
	return a ? a->err : "";
}

MICROVM_API uint32_t microvm_agent_protocol(const microvm_agent *a)
{
	return a ? a->proto : 0;
}

MICROVM_API const char *microvm_agent_version(const microvm_agent *a)
{
	return a && a->version ? a->version : "";
}

MICROVM_API int microvm_agent_set_io_timeout(microvm_agent *a, int timeout_ms)
{
	if (!a || timeout_ms < -1)
		return -EINVAL;
	a->io_timeout = timeout_ms;
	return 0;
}

MICROVM_API int microvm_agent_ping(microvm_agent *a)
{
	if (!a)
		return -EINVAL;
	int r = check_usable(a);
	if (r < 0)
		return r;
	r = agent_enc_empty(&a->out, AGENT_MSG_PING);
	if (r < 0)
		return enc_fail(a, r, "ping");
	r = flush_out(a, a->io_timeout);
	return r < 0 ? r : wait_ok(a, "PING", NULL);
}

/* ------------------------------------------------------------------ exec */

struct collect {
	struct agent_buf buf;
	size_t limit;
};

static void collect_free(struct collect *c)
{
	agent_buf_free(&c->buf);
}

/* Store output, up to the limit. 0, 1 = truncated, -ENOMEM. */
static int collect_add(struct collect *c, const uint8_t *data, size_t len)
{
	size_t room = c->limit - c->buf.len;
	size_t n = len < room ? len : room;
	if (n) {
		if (agent_buf_reserve(&c->buf, n) < 0)
			return -ENOMEM;
		memcpy(c->buf.data + c->buf.len, data, n);
		c->buf.len += n;
	}
	return n < len;
}

/* Hand the collected bytes over as a NUL-terminated malloc'd string. */
static char *collect_take(struct collect *c, size_t *len)
{
	if (agent_buf_reserve(&c->buf, 1) < 0)
		return NULL;
	c->buf.data[c->buf.len] = 0;
	*len = c->buf.len;
	char *s = (char *)c->buf.data;
	c->buf.data = NULL;
	c->buf.len = c->buf.cap = 0;
	return s;
}

static size_t count_strings(const char *const *v, size_t max)
{
	size_t n = 0;
	while (v && v[n] && n <= max)
		n++;
	return n;
}

struct exec_state {
	microvm_agent *a;
	const microvm_exec_config *cfg;
	microvm_exec_result *res;
	struct collect out, err;
	bool started, done, cancelled;
	int stdin_phase; /* 0 data, 1 fd, 2 done (EOF queued); 3 = no stdin */
	size_t stdin_off;
	bool kill_sent;
	int64_t kill_deadline;
};

static int queue_signal(struct exec_state *st, int sig)
{
	int r = agent_enc_signal(&st->a->out, (uint32_t)sig);
	return r < 0 ? broken(st->a, r, "out of memory") : 0;
}

/* Queue a SIGKILL whose EXIT we wait for at most KILL_GRACE_MS. */
static int queue_kill(struct exec_state *st)
{
	if (st->kill_sent)
		return 0;
	st->kill_sent = true;
	st->kill_deadline = now_ms() + KILL_GRACE_MS;
	return queue_signal(st, 9);
}

/* The resource use fields, into a result struct new enough to have them. */
static void exec_set_rusage(microvm_exec_result *res, const struct agent_rusage *ru)
{
	if (res->size < ABI_END(microvm_exec_result, sys_us))
		return;
	res->max_rss_kib = ru->max_rss_kib;
	res->user_us = ru->user_us;
	res->sys_us = ru->sys_us;
}

static int deliver(struct exec_state *st, int stream, const struct agent_frame *f)
{
	const microvm_exec_config *cfg = st->cfg;
	if (cfg->on_output) {
		if (st->cancelled || !f->len)
			return 0;
		if (cfg->on_output(cfg->opaque, stream, f->payload, f->len) != 0) {
			st->cancelled = true;
			st->res->flags |= MICROVM_EXEC_CANCELLED;
			return queue_kill(st);
		}
		return 0;
	}
	struct collect *c = stream == MICROVM_EXEC_STDOUT ? &st->out : &st->err;
	int r = collect_add(c, f->payload, f->len);
	if (r < 0)
		return broken(st->a, r, "out of memory collecting output");
	if (r > 0)
		st->res->flags |= stream == MICROVM_EXEC_STDOUT ? MICROVM_EXEC_OUT_TRUNCATED
							     : MICROVM_EXEC_ERR_TRUNCATED;
	return 0;
}

/* Handle frames already received. */
static int exec_frames(struct exec_state *st)
{
	microvm_agent *a = st->a;
	struct agent_frame f;
	int r;
	while (!st->done && (r = take_frame(a, &f)) != 0) {
		if (r < 0)
			return r;
		if (!st->started) {
			if (f.type == AGENT_MSG_ERROR)
				return agent_error(a, &f);
			uint32_t pid;
			if (f.type != AGENT_MSG_STARTED || agent_dec_u32(&f, &pid) < 0)
				return unexpected(a, &f, "EXEC start");
			st->started = true;
			continue;
		}
		switch (f.type) {
		case AGENT_MSG_STDOUT:
			r = deliver(st, MICROVM_EXEC_STDOUT, &f);
			break;
		case AGENT_MSG_STDERR:
			r = deliver(st, MICROVM_EXEC_STDERR, &f);
			break;
		case AGENT_MSG_EXIT: {
			struct agent_exit x;
			if (agent_dec_exit(&f, &x) < 0)
				return broken(a, -EPROTO, "malformed EXIT frame from agent");
			st->res->exit_code = x.exit_code;
			st->res->signal = x.signo;
			if (x.flags & AGENT_EXIT_CORE)
				st->res->flags |= MICROVM_EXEC_CORE_DUMPED;
			exec_set_rusage(st->res, &x.ru);
			st->done = true;
			r = 0;
			break;
		}
		case AGENT_MSG_ERROR:
			/* The agent gave up on the command and the connection. */
			r = agent_error(a, &f);
			a->broken = true;
			break;
		default:
			r = unexpected(a, &f, "EXEC");
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Queue stdin frames while the output buffer is small. */
static int queue_stdin_data(struct exec_state *st)
{
	const microvm_exec_config *cfg = st->cfg;
	while (st->stdin_phase == 0 && st->a->out.len < AGENT_CHUNK) {
		size_t n = cfg->stdin_len - st->stdin_off;
		if (n > AGENT_CHUNK)
			n = AGENT_CHUNK;
		if (n) {
			int r = agent_enc_bytes(&st->a->out, AGENT_MSG_STDIN,
						(const uint8_t *)cfg->stdin_data + st->stdin_off, n);
			if (r < 0)
				return broken(st->a, r, "out of memory");
			st->stdin_off += n;
		}
		if (st->stdin_off == cfg->stdin_len) {
			if (cfg->stdin_fd >= 0) {
				st->stdin_phase = 1;
			} else {
				st->stdin_phase = 2;
				if (agent_enc_empty(&st->a->out, AGENT_MSG_STDIN_EOF) < 0)
					return broken(st->a, -ENOMEM, "out of memory");
			}
		}
	}
	return 0;
}

static int read_stdin_fd(struct exec_state *st)
{
	uint8_t buf[16384];
	ssize_t n = read(st->cfg->stdin_fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n > 0) {
		if (agent_enc_bytes(&st->a->out, AGENT_MSG_STDIN, buf, (size_t)n) < 0)
			return broken(st->a, -ENOMEM, "out of memory");
		return 0;
	}
	/* End of file, or a read error (treated as end of file). */
	st->stdin_phase = 2;
	if (agent_enc_empty(&st->a->out, AGENT_MSG_STDIN_EOF) < 0)
		return broken(st->a, -ENOMEM, "out of memory");
	return 0;
}

/* While the command runs: forward the signals asked for meanwhile, kill it
 * once at its @deadline, queue stdin data. 0 or negative errno. */
static int exec_queue_requests(struct exec_state *st, int64_t deadline, bool *timed_out)
{
	microvm_agent *a = st->a;
	pthread_mutex_lock(&a->lock);
	uint64_t sigs = a->pending_sigs;
	a->pending_sigs = 0;
	pthread_mutex_unlock(&a->lock);
	int r;
	for (int s = 1; s <= 64 && sigs; s++) {
		if (sigs & (1ull << (s - 1))) {
			sigs &= ~(1ull << (s - 1));
			if ((r = queue_signal(st, s)) < 0)
				return r;
		}
	}
	if (deadline >= 0 && !*timed_out && now_ms() >= deadline) {
		*timed_out = true;
		st->res->flags |= MICROVM_EXEC_TIMED_OUT;
		if ((r = queue_kill(st)) < 0)
			return r;
	}
	r = queue_stdin_data(st);
	return r < 0 ? r : 0;
}

/* Wait for the agent's socket, a wake-up or the caller's stdin until the
 * next deadline, and take what came. 0 or negative errno (broken). */
static int exec_poll(struct exec_state *st, int64_t deadline, int64_t start_deadline)
{
	microvm_agent *a = st->a;
	const microvm_exec_config *cfg = st->cfg;
	struct pollfd p[3];
	int np = 0, i_in = -1, r;
	p[np++] = (struct pollfd){ a->fd, (short)(POLLIN | (a->out.len ? POLLOUT : 0)), 0 };
	p[np++] = (struct pollfd){ a->wake_fd, POLLIN, 0 };
	if (st->started && st->stdin_phase == 1 && a->out.len < AGENT_CHUNK && !st->kill_sent) {
		i_in = np;
		p[np++] = (struct pollfd){ cfg->stdin_fd, POLLIN, 0 };
	}
	int64_t wake = -1;
	if (!st->started)
		wake = start_deadline;
	else if (st->kill_sent)
		wake = st->kill_deadline;
	else if (deadline >= 0)
		wake = deadline;
	int pr = poll(p, (nfds_t)np, left_ms(wake));
	if (pr < 0) {
		if (errno == EINTR)
			return 0;
		return broken(a, -errno, "poll: %s", strerror(errno));
	}
	if (pr == 0) {
		if (!st->started && start_deadline >= 0 && now_ms() >= start_deadline)
			return broken(a, -ETIMEDOUT, "agent did not start the command in time");
		if (st->kill_sent && now_ms() >= st->kill_deadline)
			return broken(a, -ETIMEDOUT, "agent did not confirm the kill");
		return 0;
	}
	if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && (r = recv_some(a)) < 0)
		return r;
	if (p[1].revents & POLLIN) {
		uint64_t v;
		ssize_t n = read(a->wake_fd, &v, sizeof(v));
		(void)n;
	}
	if (i_in >= 0 && p[i_in].revents && (r = read_stdin_fd(st)) < 0)
		return r;
	return 0;
}

static int exec_loop(struct exec_state *st)
{
	microvm_agent *a = st->a;
	const microvm_exec_config *cfg = st->cfg;
	int64_t deadline = cfg->timeout_ms > 0 ? now_ms() + cfg->timeout_ms : -1;
	int64_t start_deadline = deadline_after(a->io_timeout);
	bool timed_out = false;
	for (;;) {
		int r = exec_frames(st);
		if (r < 0)
			return r;
		if (st->done)
			break;
		if (st->started && (r = exec_queue_requests(st, deadline, &timed_out)) < 0)
			return r;
		if ((r = send_some(a)) < 0)
			return r;
		/* More stdin to queue and room for it: queue it now instead of
		 * waiting in poll() for the agent, which may have nothing to say
		 * (a command that reads all its input before writing). */
		if (st->started && st->stdin_phase == 0 && a->out.len < AGENT_CHUNK)
			continue;
		if ((r = exec_poll(st, deadline, start_deadline)) < 0)
			return r;
	}
	/* Complete what was queued (the agent ignores late STDIN/SIGNAL). */
	return flush_out(a, a->io_timeout);
}

/* The caller's exec configuration, checked before anything is sent. */
static int exec_check(microvm_agent *a, const microvm_exec_config *cfg)
{
	if (cfg->user && (!*cfg->user || strlen(cfg->user) > AGENT_USER_MAX))
		return fail(a, -EINVAL, "exec: user must be 1..%u bytes", AGENT_USER_MAX);
	if (cfg->user && (a->proto & 0xffff) < 1)
		return fail(a, -EOPNOTSUPP, "exec: the guest agent (protocol %u.%u) cannot switch users",
			    a->proto >> 16, a->proto & 0xffff);
	if (!cfg->argv || !cfg->argv[0] || !*cfg->argv[0])
		return fail(a, -EINVAL, "exec: empty argv");
	if (cfg->flags & ~MICROVM_EXEC_MERGE_ENV)
		return fail(a, -EINVAL, "exec: unknown flags 0x%x", cfg->flags);
	if (cfg->stdin_fd < -1 || (cfg->stdin_len && !cfg->stdin_data))
		return fail(a, -EINVAL, "exec: bad stdin");
	if (cfg->timeout_ms < -1)
		return fail(a, -EINVAL, "exec: bad timeout");
	return check_usable(a);
}

/* exec_loop() with the connection marked busy (kill() may signal it), and
 * the wake eventfd cleared after. */
static int exec_run(struct exec_state *st)
{
	microvm_agent *a = st->a;
	pthread_mutex_lock(&a->lock);
	a->exec_running = true;
	a->pending_sigs = 0;
	pthread_mutex_unlock(&a->lock);
	int r = exec_loop(st);
	pthread_mutex_lock(&a->lock);
	a->exec_running = false;
	a->pending_sigs = 0;
	pthread_mutex_unlock(&a->lock);
	uint64_t v;
	ssize_t n = read(a->wake_fd, &v, sizeof(v));
	(void)n;
	return r;
}

MICROVM_API int microvm_agent_exec(microvm_agent *a, const microvm_exec_config *ucfg,
				   microvm_exec_result *res)
{
	if (!a || !ucfg || !res)
		return -EINVAL;
	char err[200];
	if (abi_prepare_out(res, sizeof(*res), ABI_EXEC_RESULT_MIN, "exec: microvm_exec_result",
			    err, sizeof(err)) < 0)
		return fail(a, -EINVAL, "%s", err);
	res->exit_code = 0;
	res->signal = 0;
	res->flags = 0;
	res->out = res->err = NULL;
	res->out_len = res->err_len = 0;
	exec_set_rusage(res, &(struct agent_rusage){ 0, 0, 0 });
	microvm_exec_config cfg;
	if (abi_copy_in(&cfg, sizeof(cfg), ucfg, ABI_EXEC_CONFIG_MIN, "exec: microvm_exec_config",
			err, sizeof(err)) < 0)
		return fail(a, -EINVAL, "%s", err);
	int r = exec_check(a, &cfg);
	if (r < 0)
		return r;
	size_t argc = count_strings(cfg.argv, AGENT_MAX_ARGS);
	size_t envc = count_strings(cfg.envp, AGENT_MAX_ENV);
	if (argc > AGENT_MAX_ARGS || envc > AGENT_MAX_ENV)
		return fail(a, -E2BIG, "exec: more than %u arguments or environment entries",
			    AGENT_MAX_ARGS);
	bool with_stdin = cfg.stdin_data || cfg.stdin_fd >= 0;
	uint32_t wflags = (with_stdin ? AGENT_EXEC_STDIN : 0) |
			  (cfg.envp && !(cfg.flags & MICROVM_EXEC_MERGE_ENV) ? AGENT_EXEC_ENV : 0) |
			  (cfg.user ? AGENT_EXEC_USER : 0) |
			  ((a->proto & 0xffff) >= 1 ? AGENT_EXEC_RUSAGE : 0);
	r = agent_enc_exec(&a->out, wflags, cfg.argv, (uint32_t)argc, cfg.envp, (uint32_t)envc,
			   cfg.cwd, cfg.user);
	if (r < 0)
		return enc_fail(a, r, "exec");

	struct exec_state st = {
		.a = a,
		.cfg = &cfg,
		.res = res,
		.stdin_phase = with_stdin ? 0 : 3,
	};
	size_t limit = cfg.output_limit ? cfg.output_limit : MICROVM_EXEC_OUTPUT_MAX;
	st.out.limit = st.err.limit = limit;

	r = exec_run(&st);

	if (r == 0 && !cfg.on_output) {
		res->out = collect_take(&st.out, &res->out_len);
		res->err = collect_take(&st.err, &res->err_len);
		if (!res->out || !res->err) {
			microvm_exec_result_free(res);
			r = fail(a, -ENOMEM, "out of memory");
		}
	}
	collect_free(&st.out);
	collect_free(&st.err);
	if (r < 0) {
		res->flags = 0;
		res->exit_code = res->signal = 0;
	}
	return r;
}

MICROVM_API int microvm_agent_kill(microvm_agent *a, int signo)
{
	if (!a || signo < 1 || signo > 64)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&a->lock);
	if (!a->exec_running) {
		r = -ESRCH;
	} else {
		a->pending_sigs |= 1ull << (signo - 1);
		uint64_t one = 1;
		ssize_t n = write(a->wake_fd, &one, sizeof(one));
		(void)n;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

MICROVM_API void microvm_exec_result_free(microvm_exec_result *res)
{
	if (!res)
		return;
	free(res->out);
	free(res->err);
	res->out = res->err = NULL;
	res->out_len = res->err_len = 0;
}

MICROVM_API int microvm_agent_run(microvm *vm, const char *const *argv, int timeout_ms,
				  microvm_exec_result *res)
{
	if (!vm || !argv || !argv[0] || !res || timeout_ms < -1)
		return -EINVAL;
	if (timeout_ms == 0)
		timeout_ms = -1;
	int64_t deadline = deadline_after(timeout_ms);
	microvm_agent *a;
	int r = microvm_agent_connect(vm, timeout_ms, &a);
	if (r < 0)
		return r;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	cfg.argv = argv;
	if (deadline >= 0) {
		int l = left_ms(deadline);
		cfg.timeout_ms = l > 0 ? l : 1;
	}
	r = microvm_agent_exec(a, &cfg, res);
	microvm_agent_close(a);
	return r;
}

/* ----------------------------------------------------------------- files */

MICROVM_API int microvm_agent_put_file(microvm_agent *a, const char *guest_path,
				       const void *data, size_t len, uint32_t mode,
				       uint32_t flags)
{
	if (!a || !guest_path || !*guest_path || (len && !data) || flags || (mode & ~07777u))
		return -EINVAL;
	int r = check_usable(a);
	if (r < 0)
		return r;
	r = agent_enc_put_file(&a->out, guest_path, mode, 0);
	if (r < 0)
		return enc_fail(a, r, "put_file");
	size_t off = 0;
	do {
		size_t n = len - off > AGENT_CHUNK ? AGENT_CHUNK : len - off;
		if (n && (r = agent_enc_bytes(&a->out, AGENT_MSG_DATA,
					      (const uint8_t *)data + off, n)) < 0)
			return broken(a, r, "out of memory");
		off += n;
		if ((r = flush_out(a, a->io_timeout)) < 0)
			return r;
	} while (off < len);
	if ((r = agent_enc_end(&a->out, len)) < 0)
		return broken(a, r, "out of memory");
	if ((r = flush_out(a, a->io_timeout)) < 0)
		return r;
	uint64_t written;
	r = wait_ok(a, "PUT_FILE", &written);
	if (r == 0 && written != len)
		return broken(a, -EPROTO, "agent wrote %llu bytes of %zu",
			      (unsigned long long)written, len);
	return r;
}

MICROVM_API int microvm_agent_get_file(microvm_agent *a, const char *guest_path,
				       size_t max_len, void **data, size_t *len)
{
	if (data)
		*data = NULL;
	if (len)
		*len = 0;
	if (!a || !guest_path || !*guest_path || !data || !len)
		return -EINVAL;
	int r = check_usable(a);
	if (r < 0)
		return r;
	if (!max_len)
		max_len = MICROVM_AGENT_FILE_MAX;
	r = agent_enc_get_file(&a->out, guest_path, 0);
	if (r < 0)
		return enc_fail(a, r, "get_file");
	if ((r = flush_out(a, a->io_timeout)) < 0)
		return r;
	struct collect c = { .limit = max_len };
	uint64_t total = 0;
	bool too_big = false;
	for (;;) {
		struct agent_frame f;
		r = recv_frame(a, &f, a->io_timeout);
		if (r < 0)
			break;
		if (f.type == AGENT_MSG_DATA) {
			total += f.len;
			if (!too_big) {
				int cr = collect_add(&c, f.payload, f.len);
				if (cr < 0) {
					r = broken(a, cr, "out of memory");
					break;
				}
				if (cr > 0) {
					too_big = true;
					collect_free(&c);
				}
			}
			continue;
		}
		if (f.type == AGENT_MSG_ERROR) {
			r = agent_error(a, &f);
			break;
		}
		if (f.type != AGENT_MSG_END) {
			r = unexpected(a, &f, "GET_FILE");
			break;
		}
		uint64_t expect;
		if (agent_dec_u64(&f, &expect) < 0 || expect != total) {
			r = broken(a, -EPROTO, "bad END frame from agent");
			break;
		}
		if (too_big) {
			r = fail(a, -EFBIG, "get_file %s: larger than %zu bytes", guest_path, max_len);
			break;
		}
		size_t l;
		char *s = collect_take(&c, &l);
		if (!s) {
			r = fail(a, -ENOMEM, "out of memory");
			break;
		}
		*data = s;
		*len = l;
		r = 0;
		break;
	}
	collect_free(&c);
	return r;
}

MICROVM_API int microvm_agent_reseed(microvm_agent *a, const void *seed, size_t len)
{
	if (!a || !seed || !len)
		return -EINVAL;
	if (len > AGENT_RESEED_MAX)
		return -E2BIG;
	int r = check_usable(a);
	if (r < 0)
		return r;
	r = agent_enc_reseed(&a->out, 0, seed, len);
	if (r < 0)
		return enc_fail(a, r, "reseed");
	r = flush_out(a, a->io_timeout);
	return r < 0 ? r : wait_ok(a, "RESEED", NULL);
}
