/*
 * microvm-agent: the libmicrovm guest agent.
 *
 * Runs as /init (PID 1) of the default initramfs: sets up the usual mounts
 * and stdio on /dev/console, listens on vsock port MICROVM_AGENT_PORT and
 * serves the protocol of PROTOCOL.md, one forked handler process per
 * connection. As PID 1 it reaps every zombie (orphans included) and never
 * exits.
 *
 *   microvm-agent                     PID 1: init + vsock; otherwise vsock only
 *   microvm-agent --listen vsock:PORT serve on another vsock port
 *   microvm-agent --listen unix:PATH  serve on a Unix socket (host tests; no
 *                                     init work even as PID 1)
 *   microvm-agent --version
 *
 * "MICROVM-AGENT-READY" is printed on stdout (the console as PID 1) once the
 * socket listens.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/magic.h>
#include <linux/random.h>
#include <linux/vm_sockets.h>

#include "microvm.h" /* MICROVM_AGENT_PORT */
#include "netid.h"
#include "proto.h"
#include "user.h"

#ifndef MICROVM_AGENT_VERSION
#define MICROVM_AGENT_VERSION "0"
#endif

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Stop reading STDIN frames while this much stdin is waiting for the command. */
#define STDIN_BUFFER_MAX (1u << 20)
/* After the command exited, read its pipes (background processes may hold
 * them) until end of file, or no data came for DRAIN_IDLE_MS, or
 * DRAIN_MAX_MS passed. */
#define DRAIN_IDLE_MS 200
#define DRAIN_MAX_MS 1000

extern char **environ;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDOUT_FILENO, line, (size_t)n);
	(void)w;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ connection */

struct conn {
	int fd;
	struct agent_buf out; /* frames being built, sent by conn_flush() */
	uint8_t *in;          /* one received frame */
};

static int write_all(int fd, const void *p, size_t n, bool sock)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = sock ? send(fd, b, n, MSG_NOSIGNAL) : write(fd, b, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* 1 = all read, 0 = end of file before the first byte, -errno otherwise
 * (end of file in the middle is -ECONNRESET). */
static int read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return got ? -ECONNRESET : 0;
		got += (size_t)r;
	}
	return 1;
}

static int conn_flush(struct conn *c)
{
	int r = write_all(c->fd, c->out.data, c->out.len, true);
	c->out.len = 0;
	return r;
}

/* Receive one frame into c->in. 0 ok; -ENOMSG unknown type (skipped, f->type
 * set); -ECONNRESET at end of file; other -errno: unusable. */
static int conn_recv(struct conn *c, struct agent_frame *f)
{
	int r = read_full(c->fd, c->in, AGENT_FRAME_LEN_SIZE);
	if (r <= 0)
		return r == 0 ? -ECONNRESET : r;
	int64_t body = agent_frame_body_len(c->in);
	if (body < 0)
		return (int)body;
	r = read_full(c->fd, c->in + AGENT_FRAME_LEN_SIZE, (size_t)body);
	if (r <= 0)
		return r == 0 ? -ECONNRESET : r;
	size_t used;
	return agent_frame_parse(c->in, AGENT_FRAME_LEN_SIZE + (size_t)body, f, &used);
}

static int send_error(struct conn *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int send_error(struct conn *c, int err, const char *fmt, ...)
{
	char msg[AGENT_ERRMSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err <= 0 || err >= 4096)
		err = EIO;
	int r = agent_enc_error(&c->out, (uint32_t)err, msg);
	return r < 0 ? r : conn_flush(c);
}

static int send_ok(struct conn *c, uint64_t value)
{
	int r = agent_enc_ok(&c->out, value);
	return r < 0 ? r : conn_flush(c);
}

/* ------------------------------------------------------------------ exec */

static const char *const default_env[] = {
	"PATH=" DEFAULT_PATH,
	"HOME=/root",
	"TERM=dumb",
};
#define N_DEFAULT_ENV (sizeof(default_env) / sizeof(default_env[0]))

static size_t env_name_len(const char *s)
{
	const char *eq = strchr(s, '=');
	return eq ? (size_t)(eq - s) : strlen(s);
}

/* The command's environment: exactly the given one (AGENT_EXEC_ENV), or the
 * default one with the given entries added/replacing; @home ("HOME=...",
 * or NULL) replaces the default HOME. malloc'd array. */
static char **build_env(const struct agent_exec *e, const char *home)
{
	size_t n = (e->flags & AGENT_EXEC_ENV) ? e->envc : N_DEFAULT_ENV + e->envc;
	char **env = calloc(n + 1, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	if (!(e->flags & AGENT_EXEC_ENV)) {
		for (size_t i = 0; i < N_DEFAULT_ENV; i++) {
			size_t nl = env_name_len(default_env[i]);
			bool replaced = false;
			for (uint32_t j = 0; j < e->envc && !replaced; j++)
				replaced = env_name_len(e->envp[j]) == nl &&
					   !memcmp(e->envp[j], default_env[i], nl);
			if (!replaced)
				env[k++] = home && !strncmp(default_env[i], "HOME=", 5) ?
						   (char *)home :
						   (char *)default_env[i];
		}
	}
	for (uint32_t j = 0; j < e->envc; j++)
		env[k++] = (char *)e->envp[j];
	env[k] = NULL;
	return env;
}

struct child_failure {
	int stage; /* 1 chdir, 2 exec, 3 stdio, 4 user */
	int err;
};

static void child_fail(int fd, int stage, int err)
{
	struct child_failure cf = { stage, err };
	ssize_t w = write(fd, &cf, sizeof(cf));
	(void)w;
	_exit(127);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
	long fd = syscall(SYS_pidfd_open, pid, 0);
	if (fd >= 0) {
		(void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		return (int)fd;
	}
#endif
	(void)pid;
	return -1;
}

struct run {
	pid_t pid;
	int pidfd;
	int out_fd, err_fd, in_fd;
	struct agent_buf stdin_buf;
	bool stdin_eof;
	bool exited;
	int status;
	struct rusage ru; /* the command's, from wait4() */
	int64_t exit_at, last_data;
};

/* Kill the whole process group and reap the command. */
static void run_kill_reap(struct run *rn)
{
	if (!rn->exited) {
		kill(-rn->pid, SIGKILL);
		kill(rn->pid, SIGKILL);
		while (wait4(rn->pid, &rn->status, 0, &rn->ru) < 0 && errno == EINTR)
			;
		rn->exited = true;
	}
}

static void run_cleanup(struct run *rn)
{
	close_fd(&rn->pidfd);
	close_fd(&rn->out_fd);
	close_fd(&rn->err_fd);
	close_fd(&rn->in_fd);
	agent_buf_free(&rn->stdin_buf);
}

static void run_check_exit(struct run *rn)
{
	if (rn->exited)
		return;
	pid_t p = wait4(rn->pid, &rn->status, WNOHANG, &rn->ru);
	if (p == rn->pid) {
		rn->exited = true;
		rn->exit_at = rn->last_data = now_ms();
		close_fd(&rn->pidfd);
		close_fd(&rn->in_fd);
		rn->stdin_buf.len = 0;
	}
}

/* Forward one pipe's available output as a frame. */
static int pump_output(struct conn *c, struct run *rn, int *fd, uint8_t type, uint8_t *buf)
{
	ssize_t n = read(*fd, buf, AGENT_CHUNK);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		close_fd(fd); /* EIO or similar: treat as end of file */
		return 0;
	}
	if (n == 0) {
		close_fd(fd);
		return 0;
	}
	rn->last_data = now_ms();
	int r = agent_enc_bytes(&c->out, type, buf, (size_t)n);
	return r < 0 ? r : conn_flush(c);
}

/* A frame that arrived while the command runs. 0 = go on, <0 = end the
 * connection. */
static int exec_frame(struct conn *c, struct run *rn, const struct agent_frame *f)
{
	switch (f->type) {
	case AGENT_MSG_STDIN:
		if (rn->in_fd >= 0 && !rn->stdin_eof && f->len) {
			if (agent_buf_reserve(&rn->stdin_buf, f->len) < 0)
				return -ENOMEM;
			memcpy(rn->stdin_buf.data + rn->stdin_buf.len, f->payload, f->len);
			rn->stdin_buf.len += f->len;
		}
		return 0;
	case AGENT_MSG_STDIN_EOF:
		if (agent_dec_empty(f) < 0)
			return -EBADMSG;
		rn->stdin_eof = true;
		if (!rn->stdin_buf.len)
			close_fd(&rn->in_fd);
		return 0;
	case AGENT_MSG_SIGNAL: {
		uint32_t sig;
		if (agent_dec_u32(f, &sig) < 0)
			return -EBADMSG;
		if (sig >= 1 && sig < 65 && !rn->exited)
			kill(-rn->pid, (int)sig);
		return 0;
	}
	default:
		/* Another request while a command runs: protocol violation. */
		send_error(c, EPROTO, "%s received while a command is running",
			   agent_msg_name(f->type));
		return -EPROTO;
	}
}

/* Pipes for the command's stdout, stderr, stdin (if @with_stdin) and for
 * the child's report of a failure before exec. 0, or errno with none open. */
static int exec_pipes(int outp[2], int errp[2], int inp[2], int failp[2], bool with_stdin)
{
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    (with_stdin && pipe2(inp, O_CLOEXEC) < 0) || pipe2(failp, O_CLOEXEC) < 0) {
		int err = errno;
		for (int i = 0; i < 2; i++) {
			close_fd(&outp[i]);
			close_fd(&errp[i]);
			close_fd(&inp[i]);
			close_fd(&failp[i]);
		}
		return err;
	}
	return 0;
}

/* In the forked child: a new session with default signals, stdio on the
 * pipes (stdin on /dev/null unless the host sends it), then exec. A failure
 * is reported on @fail_fd and the child exits. */
static void exec_child(const struct agent_exec *e, const struct user_cred *cred, char **env,
		       const char *cwd, int in_fd, int out_fd, int err_fd, int fail_fd)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	setsid();
	int in = (e->flags & AGENT_EXEC_STDIN) ? in_fd : open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (in < 0 || dup2(in, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		child_fail(fail_fd, 3, errno);
	int err = cred ? user_switch(cred) : 0;
	if (err)
		child_fail(fail_fd, 4, err);
	if (chdir(cwd) < 0)
		child_fail(fail_fd, 1, errno);
	environ = env;
	execvp(e->argv[0], (char *const *)e->argv);
	child_fail(fail_fd, 2, errno);
}

/* Wait until the child has exec'd (the pipe closes) or reported why it could
 * not. true, with @cf filled, if it could not. */
static bool child_failed(int fail_fd, struct child_failure *cf)
{
	ssize_t n;
	do
		n = read(fail_fd, cf, sizeof(*cf));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*cf);
}

static int send_child_failure(struct conn *c, const struct child_failure *cf, const char *cwd,
			      const char *prog)
{
	if (cf->stage == 1)
		return send_error(c, cf->err, "chdir %s: %s", cwd, strerror(cf->err));
	if (cf->stage == 2)
		return send_error(c, cf->err, "exec %s: %s", prog, strerror(cf->err));
	if (cf->stage == 4)
		return send_error(c, cf->err, "switching user: %s", strerror(cf->err));
	return send_error(c, cf->err, "stdio setup: %s", strerror(cf->err));
}

/* Start the command of @e with environment @env; its pid and pipes go into
 * @rn. 1 when it runs; otherwise why not was sent to the host (0) or could
 * not be (negative errno). */
static int exec_spawn(struct conn *c, const struct agent_exec *e, const struct user_cred *cred,
		      char **env, struct run *rn)
{
	const char *cwd = *e->cwd ? e->cwd : "/";
	int outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, inp[2] = { -1, -1 },
	    failp[2] = { -1, -1 };
	int err = exec_pipes(outp, errp, inp, failp, e->flags & AGENT_EXEC_STDIN);
	if (err)
		return send_error(c, err, "pipe: %s", strerror(err));
	pid_t pid = fork();
	if (pid == 0)
		exec_child(e, cred, env, cwd, inp[0], outp[1], errp[1], failp[1]);
	int fork_err = errno;
	close_fd(&outp[1]);
	close_fd(&errp[1]);
	close_fd(&inp[0]);
	close_fd(&failp[1]);
	rn->out_fd = outp[0];
	rn->err_fd = errp[0];
	rn->in_fd = inp[1];
	if (pid < 0) {
		close_fd(&failp[0]);
		run_cleanup(rn);
		return send_error(c, fork_err, "fork: %s", strerror(fork_err));
	}
	rn->pid = pid;
	struct child_failure cf;
	bool failed = child_failed(failp[0], &cf);
	close_fd(&failp[0]);
	if (!failed)
		return 1;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	run_cleanup(rn);
	return send_child_failure(c, &cf, cwd, e->argv[0]);
}

/* The descriptors a running command's relay waits on, and where each is. */
struct run_poll {
	struct pollfd p[5];
	int np, i_sock, i_out, i_err, i_in;
};

/* The command has exited and its pipes are drained (closed, idle for
 * DRAIN_IDLE_MS or drained for DRAIN_MAX_MS) at time @t. */
static bool run_drained(const struct run *rn, int64_t t)
{
	return rn->exited && ((rn->out_fd < 0 && rn->err_fd < 0) || t - rn->last_data >= DRAIN_IDLE_MS ||
			      t - rn->exit_at >= DRAIN_MAX_MS);
}

/* Fill @rp: the host's frames (unless too much stdin waits), the output
 * pipes, room in the stdin pipe when there is stdin to write, the command's
 * exit. Returns the poll timeout at time @t. */
static int run_poll_fds(const struct conn *c, const struct run *rn, int64_t t, struct run_poll *rp)
{
	rp->np = 0;
	rp->i_out = rp->i_err = rp->i_in = -1;
	rp->i_sock = rp->np;
	rp->p[rp->np++] = (struct pollfd){ c->fd, rn->stdin_buf.len < STDIN_BUFFER_MAX ? POLLIN : 0, 0 };
	if (rn->out_fd >= 0) {
		rp->i_out = rp->np;
		rp->p[rp->np++] = (struct pollfd){ rn->out_fd, POLLIN, 0 };
	}
	if (rn->err_fd >= 0) {
		rp->i_err = rp->np;
		rp->p[rp->np++] = (struct pollfd){ rn->err_fd, POLLIN, 0 };
	}
	if (rn->in_fd >= 0 && rn->stdin_buf.len) {
		rp->i_in = rp->np;
		rp->p[rp->np++] = (struct pollfd){ rn->in_fd, POLLOUT, 0 };
	}
	/* pidfd readiness is handled by run_check_exit(). */
	if (rn->pidfd >= 0)
		rp->p[rp->np++] = (struct pollfd){ rn->pidfd, POLLIN, 0 };
	if (rn->exited) {
		int64_t a = DRAIN_IDLE_MS - (t - rn->last_data), b = DRAIN_MAX_MS - (t - rn->exit_at);
		return (int)(a < b ? a : b);
	}
	return rn->pidfd < 0 ? 20 : -1; /* no pidfd: poll waitpid */
}

/* Write what the command's stdin pipe takes of the buffered stdin. */
static void feed_stdin(struct run *rn)
{
	ssize_t w = write(rn->in_fd, rn->stdin_buf.data, rn->stdin_buf.len);
	if (w > 0) {
		agent_buf_consume(&rn->stdin_buf, (size_t)w);
		if (!rn->stdin_buf.len && rn->stdin_eof)
			close_fd(&rn->in_fd);
	} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
		/* EPIPE: the command closed its stdin; drop the rest. */
		rn->stdin_buf.len = 0;
		close_fd(&rn->in_fd);
	}
}

/* Act on what poll() reported in @rp. 0, or negative errno to stop. */
static int run_handle(struct conn *c, struct run *rn, const struct run_poll *rp, uint8_t *buf)
{
	const struct pollfd *p = rp->p;
	int r = 0;
	if (rp->i_out >= 0 && p[rp->i_out].revents)
		r = pump_output(c, rn, &rn->out_fd, AGENT_MSG_STDOUT, buf);
	if (r == 0 && rp->i_err >= 0 && p[rp->i_err].revents)
		r = pump_output(c, rn, &rn->err_fd, AGENT_MSG_STDERR, buf);
	if (r == 0 && rp->i_in >= 0 && p[rp->i_in].revents && rn->in_fd >= 0)
		feed_stdin(rn);
	if (r == 0 && p[rp->i_sock].revents) {
		struct agent_frame fr;
		int fr_r = conn_recv(c, &fr);
		if (fr_r == 0)
			r = exec_frame(c, rn, &fr);
		else if (fr_r != -ENOMSG) /* unknown types are skipped */
			r = fr_r;
	}
	return r;
}

/* Relay output, stdin and signals until the command has exited and its pipes
 * are drained. 0, or negative errno (the host went away or broke the
 * protocol). */
static int run_relay(struct conn *c, struct run *rn)
{
	uint8_t *buf = malloc(AGENT_CHUNK);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	while (r == 0) {
		run_check_exit(rn);
		int64_t t = now_ms();
		if (run_drained(rn, t))
			break;
		struct run_poll rp;
		int timeout = run_poll_fds(c, rn, t, &rp);
		if (poll(rp.p, (nfds_t)rp.np, timeout) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		r = run_handle(c, rn, &rp, buf);
	}
	free(buf);
	return r;
}

static int send_exit(struct conn *c, const struct run *rn, bool with_rusage)
{
	int32_t code = -1, sig = 0;
	uint32_t xflags = 0;
	if (WIFEXITED(rn->status)) {
		code = WEXITSTATUS(rn->status);
	} else if (WIFSIGNALED(rn->status)) {
		sig = WTERMSIG(rn->status);
		if (WCOREDUMP(rn->status))
			xflags |= AGENT_EXIT_CORE;
	}
	const struct timeval *ut = &rn->ru.ru_utime, *st = &rn->ru.ru_stime;
	struct agent_rusage ru = {
		.max_rss_kib = (uint64_t)rn->ru.ru_maxrss,
		.user_us = (uint64_t)ut->tv_sec * 1000000 + (uint64_t)ut->tv_usec,
		.sys_us = (uint64_t)st->tv_sec * 1000000 + (uint64_t)st->tv_usec,
	};
	int r = agent_enc_exit(&c->out, code, sig, xflags, with_rusage ? &ru : NULL);
	return r < 0 ? r : conn_flush(c);
}

/* The user to run as (@e->user) and its "HOME=" entry. 1 = resolved (or
 * none asked), else what went wrong was sent (0) or could not be (<0). */
static int exec_user(struct conn *c, const struct agent_exec *e, struct user_cred *cred,
		     char *home, size_t homelen)
{
	char why[512];
	*home = 0;
	if (!e->user)
		return 1;
	int err = user_resolve(e->user, cred, why, sizeof(why));
	if (err)
		return send_error(c, err, "%s", why);
	snprintf(home, homelen, "HOME=%s", *cred->home ? cred->home : "/");
	return 1;
}

/* Start the command of EXEC @f: 1 when it runs (@rn filled), else as
 * exec_spawn(). */
static int exec_start(struct conn *c, const struct agent_exec *e, struct run *rn)
{
	struct user_cred cred;
	char home[300];
	int r = exec_user(c, e, &cred, home, sizeof(home));
	if (r != 1)
		return r;
	char **env = build_env(e, *home ? home : NULL);
	if (!env)
		return send_error(c, ENOMEM, "out of memory");
	r = exec_spawn(c, e, e->user ? &cred : NULL, env, rn);
	free(env);
	return r;
}

static int do_exec(struct conn *c, const struct agent_frame *f)
{
	struct agent_exec e;
	int r = agent_dec_exec(f, &e);
	if (r < 0) {
		send_error(c, -r, "malformed EXEC request");
		return r;
	}
	bool with_rusage = e.flags & AGENT_EXEC_RUSAGE;
	struct run rn = { .pid = -1, .pidfd = -1, .out_fd = -1, .err_fd = -1, .in_fd = -1 };
	r = exec_start(c, &e, &rn);
	agent_exec_free(&e);
	if (r != 1)
		return r;

	set_nonblock(rn.out_fd);
	set_nonblock(rn.err_fd);
	if (rn.in_fd >= 0)
		set_nonblock(rn.in_fd);
	rn.pidfd = pidfd_open_compat(rn.pid);

	r = agent_enc_started(&c->out, (uint32_t)rn.pid);
	if (r == 0)
		r = conn_flush(c);
	if (r == 0)
		r = run_relay(c, &rn);
	if (r < 0) {
		/* The host went away or broke the protocol: end the command. */
		run_kill_reap(&rn);
		run_cleanup(&rn);
		return r;
	}
	run_cleanup(&rn);
	return send_exit(c, &rn, with_rusage);
}

/* ----------------------------------------------------------------- files */

static int do_put_file(struct conn *c, const struct agent_frame *f)
{
	struct agent_file_req req;
	int r = agent_dec_put_file(f, &req);
	if (r < 0) {
		send_error(c, EBADMSG, "malformed PUT_FILE request");
		return r;
	}
	/* The path lives in c->in, which the next frames overwrite. */
	char *path = strdup(req.path);
	if (!path)
		return -ENOMEM;
	int err = 0;
	const char *what = "open";
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		err = errno;
	} else if (fchmod(fd, req.mode & 07777) < 0) {
		err = errno;
		what = "chmod";
	}
	uint64_t total = 0;
	for (;;) {
		struct agent_frame fr;
		r = conn_recv(c, &fr);
		if (r < 0)
			break;
		if (fr.type == AGENT_MSG_DATA) {
			if (!err && fr.len) {
				int w = write_all(fd, fr.payload, fr.len, false);
				if (w < 0) {
					err = -w;
					what = "write";
				}
			}
			total += fr.len;
			continue;
		}
		if (fr.type != AGENT_MSG_END) {
			send_error(c, EPROTO, "%s received during PUT_FILE", agent_msg_name(fr.type));
			r = -EPROTO;
			break;
		}
		uint64_t expect;
		if (agent_dec_u64(&fr, &expect) < 0) {
			send_error(c, EBADMSG, "malformed END");
			r = -EBADMSG;
			break;
		}
		if (fd >= 0 && close(fd) < 0 && !err) {
			err = errno;
			what = "close";
		}
		fd = -1;
		if (!err && expect != total) {
			err = EIO;
			what = "size check";
		}
		if (err)
			r = send_error(c, err, "%s %s: %s", what, path, strerror(err));
		else
			r = send_ok(c, total);
		break;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

static int do_get_file(struct conn *c, const struct agent_frame *f)
{
	struct agent_file_req req;
	int r = agent_dec_get_file(f, &req);
	if (r < 0) {
		send_error(c, EBADMSG, "malformed GET_FILE request");
		return r;
	}
	int fd = open(req.path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return send_error(c, errno, "open %s: %s", req.path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int err = errno;
		close(fd);
		return send_error(c, err, "stat %s: %s", req.path, strerror(err));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		int err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		return send_error(c, err, "%s: not a regular file", req.path);
	}
	uint8_t *buf = malloc(AGENT_CHUNK);
	if (!buf) {
		close(fd);
		return send_error(c, ENOMEM, "out of memory");
	}
	uint64_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, AGENT_CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			r = send_error(c, err, "read %s: %s", req.path, strerror(err));
			break;
		}
		if (n == 0) {
			r = agent_enc_end(&c->out, total);
			if (r == 0)
				r = conn_flush(c);
			break;
		}
		total += (uint64_t)n;
		r = agent_enc_bytes(&c->out, AGENT_MSG_DATA, buf, (size_t)n);
		if (r == 0)
			r = conn_flush(c);
		if (r < 0)
			break;
	}
	free(buf);
	close(fd);
	return r;
}

/* ----------------------------------------------------------------- netid */

/* The host's MAC addresses for the guest's virtio-net interfaces (netid.c). */
static int do_netid(struct conn *c, const struct agent_frame *f)
{
	struct agent_netid id;
	int r = agent_dec_netid(f, &id);
	if (r < 0 || id.flags) {
		send_error(c, EBADMSG, "malformed NETID request");
		return -EBADMSG;
	}
	char why[256];
	r = netid_apply(id.macs, id.n, why, sizeof(why));
	return r < 0 ? send_error(c, -r, "%s", why) : send_ok(c, (uint64_t)r);
}

/* ---------------------------------------------------------------- reseed */

static int do_reseed(struct conn *c, const struct agent_frame *f)
{
	struct agent_reseed rs;
	int r = agent_dec_reseed(f, &rs);
	if (r < 0) {
		send_error(c, EBADMSG, "malformed RESEED request");
		return r;
	}
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return send_error(c, errno, "open /dev/urandom: %s", strerror(errno));
	/* struct rand_pool_info: int entropy_count (bits), int buf_size
	 * (bytes), then the bytes. */
	struct rand_pool_info *info = calloc(1, sizeof(*info) + rs.len + 4);
	if (!info) {
		close(fd);
		return send_error(c, ENOMEM, "out of memory");
	}
	info->entropy_count = (int)(rs.len * 8);
	info->buf_size = (int)rs.len;
	memcpy(info->buf, rs.data, rs.len);
	uint64_t credited = 0;
	if (ioctl(fd, RNDADDENTROPY, info) == 0) {
		credited = rs.len * 8u;
	} else if (errno == EPERM || errno == EACCES || errno == ENOTTY) {
		/* Without CAP_SYS_ADMIN: a write mixes the bytes in, no credit. */
		int w = write_all(fd, rs.data, rs.len, false);
		if (w < 0) {
			free(info);
			close(fd);
			return send_error(c, -w, "write /dev/urandom: %s", strerror(-w));
		}
	} else {
		int err = errno;
		free(info);
		close(fd);
		return send_error(c, err, "RNDADDENTROPY: %s", strerror(err));
	}
	free(info);
	close(fd);
	return send_ok(c, credited);
}

/* --------------------------------------------------------------- handler */

static int handle_connection(int fd)
{
	struct conn c = { .fd = fd };
	c.in = malloc(AGENT_FRAME_LEN_SIZE + AGENT_FRAME_MAX);
	if (!c.in)
		return 1;
	int r = agent_enc_hello(&c.out, AGENT_PROTO_VERSION, 0, MICROVM_AGENT_VERSION);
	if (r == 0)
		r = conn_flush(&c);
	while (r == 0) {
		struct agent_frame f;
		r = conn_recv(&c, &f);
		if (r == -ENOMSG) {
			r = send_error(&c, ENOSYS, "unknown message type 0x%02x", f.type);
			continue;
		}
		if (r < 0)
			break;
		switch (f.type) {
		case AGENT_MSG_PING:
			if (agent_dec_empty(&f) < 0) {
				send_error(&c, EBADMSG, "malformed PING");
				r = -EBADMSG;
			} else {
				r = send_ok(&c, 0);
			}
			break;
		case AGENT_MSG_EXEC:
			r = do_exec(&c, &f);
			break;
		case AGENT_MSG_PUT_FILE:
			r = do_put_file(&c, &f);
			break;
		case AGENT_MSG_GET_FILE:
			r = do_get_file(&c, &f);
			break;
		case AGENT_MSG_RESEED:
			r = do_reseed(&c, &f);
			break;
		case AGENT_MSG_NETID:
			r = do_netid(&c, &f);
			break;
		case AGENT_MSG_STDIN:
		case AGENT_MSG_STDIN_EOF:
		case AGENT_MSG_SIGNAL:
			/* Late frames of a command that already ended. */
			break;
		default:
			send_error(&c, EPROTO, "unexpected %s", agent_msg_name(f.type));
			r = -EPROTO;
			break;
		}
	}
	agent_buf_free(&c.out);
	free(c.in);
	close(fd);
	return 0;
}

/* ------------------------------------------------------------ init (PID 1) */

static void try_mount(const char *src, const char *dst, const char *type, unsigned long fl,
		      const char *opts)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, fl, opts) < 0 && errno != EBUSY)
		say("microvm-agent: mount %s on %s: %s", type, dst, strerror(errno));
}

static void setup_console(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		return;
	for (int i = 0; i < 3; i++)
		if (fd != i)
			dup2(fd, i);
	if (fd > 2)
		close(fd);
}

static void loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		(void)ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

/* The DNS servers DHCP gave the kernel's IP autoconfiguration (ip=dhcp on
 * the kernel command line) into /etc/resolv.conf: /proc/net/pnp's
 * "nameserver" and "domain" lines, resolv.conf's own format. Nothing to do
 * (the image's file stays) when there are none. */
static void resolv_from_pnp(void)
{
	char in[1024], out[1024] = "";
	size_t n = 0, k = 0;
	int fd = open("/proc/net/pnp", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t r;
	while (n < sizeof(in) - 1 && (r = read(fd, in + n, sizeof(in) - 1 - n)) > 0)
		n += (size_t)r;
	close(fd);
	in[n] = 0;
	for (char *save = NULL, *l = strtok_r(in, "\n", &save); l && k < sizeof(out);
	     l = strtok_r(NULL, "\n", &save))
		if (!strncmp(l, "nameserver ", 11) || !strncmp(l, "domain ", 7))
			k += (size_t)snprintf(out + k, sizeof(out) - k, "%s\n", l);
	if (!strstr(out, "nameserver ") || k >= sizeof(out))
		return;
	(void)mkdir("/etc", 0755);        /* an initramfs may have none */
	(void)unlink("/etc/resolv.conf"); /* may be a dangling symlink */
	fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, out, k, false) < 0)
		say("microvm-agent: /etc/resolv.conf: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void init_setup(void)
{
	try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	setup_console();
	try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	try_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	mkdir("/dev/pts", 0755);
	if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666") ==
	    0)
		(void)symlink("pts/ptmx", "/dev/ptmx");
	try_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	(void)symlink("/proc/self/fd", "/dev/fd");
	(void)symlink("/proc/self/fd/0", "/dev/stdin");
	(void)symlink("/proc/self/fd/1", "/dev/stdout");
	(void)symlink("/proc/self/fd/2", "/dev/stderr");
	setenv("PATH", DEFAULT_PATH, 1);
	setenv("HOME", "/root", 1);
	if (chdir("/") < 0)
		say("microvm-agent: chdir /: %s", strerror(errno));
	loopback_up();
	resolv_from_pnp();
}

/* ------------------------------------------------------------ overlay root */

/*
 * microvm.overlay=tmpfs or microvm.overlay=/dev/vdX on the kernel command
 * line (read from /proc/cmdline: the kernel takes a word with a dot for a
 * module parameter and does not pass it to init) makes / a writable overlay
 * of the root file system, which stays untouched (boot it read-only: root=...
 * ro): the upper layer is a tmpfs, or the ext4 file system on /dev/vdX (a
 * scratch disk; its upper/ and work/ survive a reboot), mounted at
 * OVL_DIR; the overlay is mounted at OVL_DIR/root and becomes / with
 * pivot_root(); the old root is then detached (the overlay keeps using it as
 * its lower layer, it is just no longer visible). On any failure the agent
 * says so on the console and goes on with the root it has.
 */
#define OVL_DIR "/.microvm/overlay"

/* The value of the last microvm.overlay= word of /proc/cmdline into @val
 * ("" if there is none). /proc is mounted for this and unmounted again. */
static void overlay_param(char *val, size_t len)
{
	val[0] = 0;
	bool mounted = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
	char buf[4096];
	ssize_t n = -1;
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
	}
	if (mounted)
		umount2("/proc", MNT_DETACH);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *w = strtok(buf, " \t\n"); w; w = strtok(NULL, " \t\n")) {
		if (!strcmp(w, "--"))
			break; /* the rest is init's argv */
		if (!strncmp(w, "microvm.overlay=", 16))
			snprintf(val, len, "%s", w + 16);
	}
}

/* The upper layer's file system at OVL_DIR: a tmpfs for "tmpfs", else the
 * ext4 block device @spec ("/dev/..."). */
static int overlay_mount_upper(const char *spec)
{
	if (!strcmp(spec, "tmpfs"))
		return mount("tmpfs", OVL_DIR, "tmpfs", 0, "mode=0755");
	if (strncmp(spec, "/dev/", 5) || strstr(spec, "..")) {
		errno = EINVAL;
		return -1;
	}
	/* The kernel mounts devtmpfs on /dev before init (DEVTMPFS_MOUNT);
	 * mount it here if it did not (devtmpfs reports the tmpfs magic). */
	struct statfs sf;
	if (statfs("/dev", &sf) < 0 || sf.f_type != TMPFS_MAGIC)
		(void)mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	return mount(spec, OVL_DIR, "ext4", 0, NULL);
}

/* upper/, work/ and root/ in OVL_DIR, and the overlay of / on root/. */
static int overlay_mount_root(void)
{
	static const char *const dirs[] = { OVL_DIR "/upper", OVL_DIR "/work", OVL_DIR "/root" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(dirs[i], 0755) < 0 && errno != EEXIST)
			return -1;
	return mount("overlay", OVL_DIR "/root", "overlay", 0,
		     "lowerdir=/,upperdir=" OVL_DIR "/upper,workdir=" OVL_DIR "/work");
}

/* Make OVL_DIR/root the root (pivot_root(".", ".") stacks the old root on
 * the new one; unmounting "." then detaches the old root). */
static int overlay_pivot(void)
{
	if (chdir(OVL_DIR "/root") < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return -1;
	if (umount2(".", MNT_DETACH) < 0)
		say("microvm-agent: overlay: detaching the old root: %s", strerror(errno));
	return chdir("/");
}

/* Called by PID 1 before init_setup(): see the comment above OVL_DIR. */
static void overlay_root(void)
{
	char spec[128];
	overlay_param(spec, sizeof(spec));
	if (!spec[0])
		return;
	/* pivot_root() refuses shared mounts; nothing here needs propagation. */
	(void)mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	const char *step = "mounting the upper layer on " OVL_DIR;
	int err = 0;
	if (overlay_mount_upper(spec) == 0) {
		step = "mounting the overlay";
		if (overlay_mount_root() == 0) {
			step = "pivot_root";
			if (overlay_pivot() == 0) {
				say("microvm-agent: / is an overlay (upper layer: %s)", spec);
				return;
			}
			err = errno;
			if (chdir("/") < 0 || umount2(OVL_DIR "/root", MNT_DETACH) < 0)
				say("microvm-agent: overlay: cleaning up: %s", strerror(errno));
		}
		err = err ? err : errno;
		umount2(OVL_DIR, MNT_DETACH);
	}
	err = err ? err : errno;
	say("microvm-agent: ERROR: microvm.overlay=%s: %s failed: %s; going on with the root "
	    "file system as it is (read-only?)",
	    spec, step, strerror(err));
}

/* ---------------------------------------------------------------- listen */

struct listen_spec {
	bool unix_sock;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned port;
};

static int open_listener(const struct listen_spec *ls, char *why, size_t whylen)
{
	int fd;
	if (ls->unix_sock) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			goto fail_sock;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, ls->path, sizeof(sa.sun_path));
		unlink(ls->path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail_bind;
	} else {
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			goto fail_sock;
		struct sockaddr_vm sa = { .svm_family = AF_VSOCK,
					  .svm_cid = VMADDR_CID_ANY,
					  .svm_port = ls->port };
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail_bind;
	}
	if (listen(fd, 64) < 0) {
		snprintf(why, whylen, "listen: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
fail_sock:
	snprintf(why, whylen, "socket(%s): %s", ls->unix_sock ? "AF_UNIX" : "AF_VSOCK",
		 strerror(errno));
	return -1;
fail_bind:
	snprintf(why, whylen, "bind: %s", strerror(errno));
	close(fd);
	return -1;
}

static void on_sigchld(int sig)
{
	(void)sig;
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void usage(void)
{
	say("usage: microvm-agent [--listen unix:PATH | --listen vsock:PORT] [--version]");
}

/* "unix:PATH" or "vsock:PORT" into @ls; false if it is neither. */
static bool parse_listen(const char *v, struct listen_spec *ls)
{
	if (!strncmp(v, "unix:", 5) && v[5] && strlen(v + 5) < sizeof(ls->path)) {
		ls->unix_sock = true;
		memset(ls->path, 0, sizeof(ls->path));
		memcpy(ls->path, v + 5, strlen(v + 5));
		return true;
	}
	if (!strncmp(v, "vsock:", 6)) {
		char *end;
		errno = 0;
		unsigned long port = strtoul(v + 6, &end, 10);
		if (!errno && end != v + 6 && !*end && port < UINT32_MAX) {
			ls->port = (unsigned)port;
			return true;
		}
	}
	return false;
}

/* The command line into @ls. -1 to go on, else the status to exit with. */
static int parse_args(int argc, char **argv, struct listen_spec *ls, bool *explicit_listen)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--version")) {
			say("microvm-agent %s (protocol %u.%u)", MICROVM_AGENT_VERSION,
			    AGENT_PROTO_MAJOR, AGENT_PROTO_MINOR);
			return 0;
		}
		if (!strcmp(a, "--listen") && i + 1 < argc) {
			*explicit_listen = true;
			if (parse_listen(argv[++i], ls))
				continue;
		}
		if (getpid() != 1) {
			usage();
			return 2;
		}
		/* As PID 1, unknown kernel-provided arguments are ignored. */
	}
	return -1;
}

/* fds 0-2 must be open so that pipes never land there. */
static void open_stdio(void)
{
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) < 0) {
			int fd = open("/dev/null", O_RDWR);
			if (fd >= 0 && fd != i) {
				dup2(fd, i);
				close(fd);
			}
		}
	}
}

/* SIGPIPE ignored; SIGCHLD caught, and blocked but while ppoll() waits with
 * @waitmask. @orig gets the mask the connection handlers restore. */
static void setup_signals(sigset_t *orig, sigset_t *waitmask)
{
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, orig);
	*waitmask = *orig;
	sigdelset(waitmask, SIGCHLD);
}

/* Accept every waiting connection, each served by a forked handler with the
 * signal mask @orig. */
static void accept_all(int lfd, const sigset_t *orig)
{
	for (;;) {
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
				nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
			return; /* EAGAIN: none waiting */
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(lfd);
			signal(SIGCHLD, SIG_DFL);
			sigprocmask(SIG_SETMASK, orig, NULL);
			_exit(handle_connection(cfd));
		}
		if (pid < 0)
			nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
		close(cfd);
	}
}

/* Reap children and serve connections on @ls, forever. Returns 1 only if
 * the socket cannot be opened and this is not PID 1 (which retries). */
static int serve(const struct listen_spec *ls, bool pid1, const sigset_t *orig,
		 const sigset_t *waitmask)
{
	int lfd = -1;
	bool reported = false;
	for (;;) {
		reap_all();
		if (lfd < 0) {
			char why[256];
			lfd = open_listener(ls, why, sizeof(why));
			if (lfd >= 0) {
				say("MICROVM-AGENT-READY");
			} else if (!pid1) {
				say("microvm-agent: %s", why);
				return 1;
			} else if (!reported) {
				/* PID 1 must not exit: keep reaping, retry. */
				say("microvm-agent: cannot listen: %s (retrying)", why);
				reported = true;
			}
		}
		/* The listener is non-blocking and polled with a timeout: a
		 * wake-up that never comes (seen with Linux 6.1 vsock after a
		 * snapshot restore: connections accepted by the kernel, poll not
		 * woken) delays a connection by a second, not forever. */
		struct pollfd p = { lfd, POLLIN, 0 };
		struct timespec wait = { lfd >= 0 ? 1 : 2, 0 };
		ppoll(&p, lfd >= 0 ? 1 : 0, &wait, waitmask);
		if (lfd >= 0)
			accept_all(lfd, orig);
	}
}

int main(int argc, char **argv)
{
	struct listen_spec ls = { .unix_sock = false, .port = MICROVM_AGENT_PORT };
	bool explicit_listen = false;
	int r = parse_args(argc, argv, &ls, &explicit_listen);
	if (r >= 0)
		return r;
	bool pid1 = getpid() == 1;
	if (pid1 && !(explicit_listen && ls.unix_sock)) {
		overlay_root();
		init_setup();
	}
	open_stdio();
	sigset_t orig, waitmask;
	setup_signals(&orig, &waitmask);
	return serve(&ls, pid1, &orig, &waitmask);
}
