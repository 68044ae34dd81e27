/*
 * User-mode networking through passt(1): the library starts passt as its
 * child, connected by a socketpair (passt --fd speaks the stream backend's
 * framing), and owns the process: net_backend_close() kills and reaps it.
 *
 * It never outlives the embedder: passt exits by itself when our end of the
 * socket closes (--fd implies --one-off), which the kernel does when the
 * process dies (the socket is close-on-exec, so no other program of the
 * embedder's keeps it open). PR_SET_PDEATHSIG is deliberately not used:
 * Linux ties it to the *thread* that forked, so it would kill the VM's
 * passt when the thread that created the VM ends (a worker pool's).
 *
 * Start-up is checked: passt writes its --pid file once initialised (after
 * parsing its options and binding the forwarded ports); here that file is
 * the write end of a pipe, reopened by passt through /proc/self/fd (made
 * writable for the user passt drops to when run as root). End of file on
 * the pipe without a pid means passt failed; its stderr goes to a memfd,
 * whose text becomes the error message, and which is sealed against growth
 * once passt runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/net.h"
#include "errbuf.h"

#define START_TIMEOUT_MS 5000
#define MAX_FWDS 64
#define CHILD_SOCK_FD 3
#define CHILD_PID_FD 4

const char *net_backend_name(const struct net_backend *b)
{
	return b->child ? "passt" : b->ops->name;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void net_backend_close(struct net_backend *b)
{
	if (!b)
		return;
	pid_t child = b->child;
	int pidfd = b->pidfd;
	b->ops->close(b); /* closes the socket: passt sees end of file */
	if (pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		close(pidfd);
	}
	if (child > 0)
		reap(child);
}

int net_passt_find(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
	if (!path)
		path = "passt";
	if (!path[0])
		return errbuf_fail(err, errlen, -EINVAL, "passt path is empty");
	if (strchr(path, '/')) {
		if (strlen(path) >= outlen)
			return errbuf_fail(err, errlen, -ENAMETOOLONG, "%s: path too long", path);
		if (access(path, X_OK) < 0) {
			int e = errno;
			return errbuf_fail(err, errlen, -e, "%s: %s", path, strerror(e));
		}
		snprintf(out, outlen, "%s", path);
		return 0;
	}
	const char *env = getenv("PATH");
	const char *dirs = env && env[0] ? env : "/usr/local/bin:/usr/bin:/bin";
	for (const char *d = dirs; *d;) {
		const char *end = strchr(d, ':');
		size_t dl = end ? (size_t)(end - d) : strlen(d);
		int n = snprintf(out, outlen, "%.*s/%s", (int)dl, dl ? d : ".", path);
		if (n > 0 && (size_t)n < outlen && access(out, X_OK) == 0)
			return 0;
		d += dl + (end ? 1 : 0);
	}
	return errbuf_fail(err, errlen, -ENOENT, "%s: not found on PATH (install passt, or "
			   "give its path)", path);
}

/* The command line, built before fork (no allocation in the child). */
struct passt_argv {
	char *argv[12 + 2 * MAX_FWDS];
	char specs[MAX_FWDS][16];
	char fdarg[16], pidarg[32];
};

static void build_argv(struct passt_argv *a, const char *path, const struct net_port_fwd *f,
		       uint32_t n)
{
	int k = 0;
	snprintf(a->fdarg, sizeof(a->fdarg), "%d", CHILD_SOCK_FD);
	snprintf(a->pidarg, sizeof(a->pidarg), "/proc/self/fd/%d", CHILD_PID_FD);
	a->argv[k++] = (char *)path;
	a->argv[k++] = (char *)"-f";
	a->argv[k++] = (char *)"-q";
	a->argv[k++] = (char *)"--fd";
	a->argv[k++] = a->fdarg;
	a->argv[k++] = (char *)"--pid";
	a->argv[k++] = a->pidarg;
	for (uint32_t i = 0; i < n; i++) {
		snprintf(a->specs[i], sizeof(a->specs[i]), "%u:%u", f[i].host_port,
			 f[i].guest_port);
		a->argv[k++] = (char *)(f[i].udp ? "-u" : "-t");
		a->argv[k++] = a->specs[i];
	}
	a->argv[k] = NULL;
}

/* In the child, after fork: async-signal-safe calls only. */
static void __attribute__((noreturn))
child_exec(const struct passt_argv *a, int sock, int pidw, int errfd, int null)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &dfl, NULL); /* fails harmlessly for KILL/STOP/reserved */
	/* Move the sources above the targets, then into place. */
	int src[5] = { null, null, errfd, sock, pidw };
	for (int i = 0; i < 5; i++)
		if ((src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 16)) < 0)
			_exit(127);
	for (int i = 0; i < 5; i++)
		if (dup2(src[i], i) < 0) /* dup2 clears close-on-exec */
			_exit(127);
	if (syscall(SYS_close_range, 5u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) < 0) {
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = 5; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
			fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	}
	execv(a->argv[0], a->argv);
	static const char msg[] = "cannot execute passt\n";
	ssize_t w = write(2, msg, sizeof(msg) - 1);
	(void)w;
	_exit(127);
}

/* passt's stderr text, without the "syslog" noise, for the error. */
static void read_stderr(int errfd, char *buf, size_t len)
{
	char raw[1024];
	ssize_t n = pread(errfd, raw, sizeof(raw) - 1, 0);
	raw[n > 0 ? n : 0] = 0;
	buf[0] = 0;
	size_t used = 0;
	char *save = NULL;
	for (char *line = strtok_r(raw, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "Failed to send", 14) || !strncmp(line, "Don't run as root", 17))
			continue;
		int w = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", line);
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
	}
}

/* Wait for passt's pid line (ready) or end of file (failed). 0 or errno. */
static int wait_ready(int pidr, pid_t pid, int errfd, char *err, size_t errlen)
{
	struct pollfd p = { .fd = pidr, .events = POLLIN };
	int r;
	do
		r = poll(&p, 1, START_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	char line[32];
	ssize_t n = r > 0 ? read(pidr, line, sizeof(line)) : -1;
	if (n > 0)
		return 0;
	kill(pid, SIGKILL);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (r == 0)
		return errbuf_fail(err, errlen, -ETIMEDOUT, "passt did not start within %d ms",
				   START_TIMEOUT_MS);
	char text[400];
	read_stderr(errfd, text, sizeof(text));
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		return errbuf_fail(err, errlen, -ENOENT, "passt: %s", text[0] ? text : "exec failed");
	return errbuf_fail(err, errlen, -EINVAL, "passt exited during start-up (%s %d)%s%s",
			   WIFEXITED(st) ? "status" : "signal",
			   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), text[0] ? ": " : "",
			   text);
}

struct spawn_fds {
	int sv[2], pp[2], errfd, null;
};

static void close_fds(struct spawn_fds *f)
{
	int *all[] = { &f->sv[0], &f->sv[1], &f->pp[0], &f->pp[1], &f->errfd, &f->null };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (*all[i] >= 0)
			close(*all[i]);
		*all[i] = -1;
	}
}

static int open_fds(struct spawn_fds *f, char *err, size_t errlen)
{
	*f = (struct spawn_fds){ { -1, -1 }, { -1, -1 }, -1, -1 };
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv) < 0 ||
	    pipe2(f->pp, O_CLOEXEC) < 0 || fchmod(f->pp[1], 0622) < 0 ||
	    (f->errfd = memfd_create("passt-stderr", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0 ||
	    (f->null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
		int e = errno;
		close_fds(f);
		return errbuf_fail(err, errlen, -e, "passt: %s", strerror(e));
	}
	return 0;
}

/* Fork and exec passt; wait until it runs. Its pid, or negative errno. */
static pid_t spawn(const struct passt_argv *a, struct spawn_fds *f, char *err, size_t errlen)
{
	pid_t pid = fork();
	if (pid == 0)
		child_exec(a, f->sv[1], f->pp[1], f->errfd, f->null);
	if (pid < 0) {
		int e = errno;
		return errbuf_fail(err, errlen, -e, "passt: fork: %s", strerror(e));
	}
	close(f->sv[1]);
	close(f->pp[1]);
	f->sv[1] = f->pp[1] = -1;
	int r = wait_ready(f->pp[0], pid, f->errfd, err, errlen);
	if (r < 0)
		return r;
	fcntl(f->errfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK);
	return pid;
}

int net_passt_open(const char *path, const struct net_port_fwd *fwds, uint32_t n,
		   struct net_backend **out, char *err, size_t errlen)
{
	if (n > MAX_FWDS)
		return errbuf_fail(err, errlen, -EINVAL, "at most %d port forwards", MAX_FWDS);
	char exe[PATH_MAX];
	int r = net_passt_find(path, exe, sizeof(exe), err, errlen);
	if (r < 0)
		return r;
	struct passt_argv *a = malloc(sizeof(*a));
	if (!a)
		return errbuf_fail(err, errlen, -ENOMEM, "out of memory");
	build_argv(a, exe, fwds, n);
	struct spawn_fds f;
	r = open_fds(&f, err, errlen);
	pid_t pid = r < 0 ? r : spawn(a, &f, err, errlen);
	free(a);
	if (pid < 0) {
		close_fds(&f);
		return (int)pid;
	}
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int sock = f.sv[0];
	f.sv[0] = -1;
	close_fds(&f);
	struct net_backend *b;
	r = net_stream_open(sock, &b, err, errlen); /* closes sock on error */
	if (r < 0) {
		if (pidfd >= 0)
			close(pidfd);
		reap(pid);
		return r;
	}
	b->child = pid;
	b->pidfd = pidfd;
	*out = b;
	return 0;
}
