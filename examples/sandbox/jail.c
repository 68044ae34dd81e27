/* --jail, first part: the namespaces the VMM process must be created in.
 *
 * A PID namespace is entered only by the children of whoever unshares it,
 * so the tool forks: the child, PID 1 of the new namespace, goes on to be
 * the VMM (it cannot see or signal any process outside: not the user's
 * other processes, not even its parent); the parent keeps nothing open but
 * stdin/stdout/stderr, drops its privileges too, and only waits to pass the
 * child's exit status on. A signal that would end the tool (SIGINT,
 * SIGTERM, SIGHUP, SIGQUIT) makes the parent SIGKILL the child (PID 1 of a
 * namespace ignores signals it has no handler for), and the child gets
 * SIGKILL if the parent dies. The child starts a new session: it has no
 * controlling terminal, so that it cannot push input into the user's
 * terminal (TIOCSTI) for the shell to run after the tool exits; it still
 * reads and writes the stdin/stdout/stderr it was given.
 *
 * Not root: a user namespace first, which gives the capabilities to create
 * the others (here and in jailfs.c) inside it and none outside; the user
 * keeps its own uid and gid inside (mapped to themselves), and its
 * supplementary groups (unmapped, but still checked: the kvm group still
 * opens /dev/kvm). Root makes the namespaces with its own privilege (a user
 * namespace would leave it with a single uid, and passt, started as root,
 * must switch to nobody) and drops it before the VM runs (privs.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? write(fd, text, strlen(text)) : -1;
	int e = errno;
	if (fd >= 0)
		close(fd);
	errno = e;
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* In a new user namespace: our own uid and gid, mapped to themselves. A
 * process that changed its uid (--host-user) is not dumpable, which makes
 * its /proc/self files root's: dumpable again for this (sbx_lockdown()
 * makes it not dumpable for good before the VM runs). */
static int map_self(uid_t uid, gid_t gid)
{
	char u[64], g[64];
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	snprintf(u, sizeof(u), "%u %u 1\n", uid, uid);
	snprintf(g, sizeof(g), "%u %u 1\n", gid, gid);
	if (write_file("/proc/self/uid_map", u) < 0 || write_file("/proc/self/setgroups", "deny") < 0 ||
	    write_file("/proc/self/gid_map", g) < 0)
		return sbx_fail("--jail: mapping the user namespace", strerror(errno));
	return 0;
}

static int unshare_first(void)
{
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int flags = CLONE_NEWPID | (uid ? CLONE_NEWUSER : 0);
	if (unshare(flags) == 0)
		return uid ? map_self(uid, gid) : 0;
	int e = errno;
	if (uid && (e == EPERM || e == ENOSPC || e == EUSERS))
		fprintf(stderr, "microvm-sandbox: --jail: cannot create a user namespace (%s): "
				"unprivileged user namespaces are disabled on this host "
				"(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, "
				"or an LSM policy); run as root or without --jail\n", strerror(e));
	else
		fprintf(stderr, "microvm-sandbox: --jail: unshare: %s\n", strerror(e));
	return SBX_EXIT_FAILED;
}

/* In the child: die with the parent; if it is already gone, now. */
static void follow_parent(int alive)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	struct pollfd p = { .fd = alive, .events = POLLIN };
	if (poll(&p, 1, 0) > 0 && (p.revents & POLLHUP))
		_exit(SBX_EXIT_FAILED);
	close(alive);
}

pid_t sbx_jail_fork(void)
{
	int alive[2];
	if (unshare_first())
		return -1;
	if (pipe2(alive, O_CLOEXEC) < 0) {
		sbx_fail("--jail: pipe", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		sbx_fail("--jail: fork", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		close(alive[1]);
		follow_parent(alive[0]);
		setsid();
		return 0;
	}
	close(alive[0]); /* alive[1] stays open until the parent exits */
	return pid;
}

static pid_t the_child;
static volatile sig_atomic_t ended_by;

static void end_child(int sig)
{
	ended_by = sig;
	kill(the_child, SIGKILL);
}

int sbx_jail_wait(pid_t child)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	struct sigaction sa = { .sa_handler = end_child };
	the_child = child;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	int st;
	pid_t r;
	while ((r = waitpid(child, &st, 0)) < 0 && errno == EINTR)
		;
	if (r < 0)
		return sbx_fail("--jail: waiting for the VMM process", strerror(errno));
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (ended_by ? ended_by : WTERMSIG(st));
}
