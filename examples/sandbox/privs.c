/* Least privilege for the VMM process (docs/security.md, "Running the
 * sandbox least-privileged").
 *
 * The VMM needs no privilege once its VM's devices are open: /dev/kvm is
 * opened through its file mode (the kvm group), guest RAM is a memfd, and
 * passt or a TAP are set up before the VM's threads exist. So, before the
 * library creates any thread (capabilities, like PR_SET_NO_NEW_PRIVS, are
 * per thread and inherited by the threads created afterwards),
 * sbx_lockdown() drops every capability (libcap-ng: effective, permitted,
 * inheritable; the bounding set when CAP_SETPCAP allows it; ambient by
 * prctl), sets PR_SET_NO_NEW_PRIVS (no exec can gain any), makes the
 * process non-dumpable (no core file or same-user ptrace with guest memory
 * in it) and lowers its limits: no core dumps, at most 4096 fds.
 *
 * Root can also become another user first (--host-user USER[:GROUP]): the
 * user's ids and groups (as initgroups(3) gives them), process-wide.
 */
#include <cap-ng.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_FDS 4096

/* A whole-string decimal id, or -1. */
static long parse_id(const char *s)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	return !*s || *end || errno || v >= 0xffffffffUL || *s == '-' ? -1 : (long)v;
}

static int take_user(const char *name, struct sbx_hostuser *u, struct passwd **pw)
{
	long id;
	*pw = getpwnam(name);
	if (!*pw && (id = parse_id(name)) >= 0)
		*pw = getpwuid((uid_t)id);
	if (!*pw && (id = parse_id(name)) < 0)
		return sbx_usage_error("--host-user %s: no such user", name);
	u->uid = *pw ? (*pw)->pw_uid : (uid_t)id;
	u->gid = *pw ? (*pw)->pw_gid : (gid_t)id;
	if (u->uid == 0)
		return sbx_usage_error("--host-user wants a user other than root");
	return 0;
}

static int take_group(const char *name, struct sbx_hostuser *u)
{
	struct group *gr = getgrnam(name);
	long id = gr ? (long)gr->gr_gid : parse_id(name);
	if (id < 0)
		return sbx_usage_error("--host-user: no such group \"%s\"", name);
	u->gid = (gid_t)id;
	return 0;
}

int sbx_hostuser_resolve(const char *spec, struct sbx_hostuser *u)
{
	if (geteuid() != 0)
		return sbx_usage_error("--host-user needs root (this is uid %u; to run as "
				       "another user, start the tool as that user)", geteuid());
	char name[256];
	const char *colon = strchr(spec, ':');
	snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
	struct passwd *pw;
	int r = take_user(name, u, &pw);
	if (!r && colon)
		r = take_group(colon + 1, u);
	if (r)
		return r;
	u->groups[0] = u->gid;
	u->ngroups = 1;
	int n = 64;
	if (pw && getgrouplist(pw->pw_name, u->gid, u->groups, &n) >= 0)
		u->ngroups = n;
	else if (pw)
		return sbx_usage_error("--host-user %s: more than 64 groups", name);
	return 0;
}

/* Become @u: groups, then gid, then uid (glibc applies them to every
 * thread; there is only one yet). */
int sbx_hostuser_become(const char *spec, const struct sbx_hostuser *u)
{
	uid_t ru, eu, su;
	if (setgroups((size_t)u->ngroups, u->groups) < 0 || setresgid(u->gid, u->gid, u->gid) < 0 ||
	    setresuid(u->uid, u->uid, u->uid) < 0 || getresuid(&ru, &eu, &su) < 0 ||
	    ru != u->uid || eu != u->uid || su != u->uid)
		return sbx_fail(spec, strerror(errno ? errno : EPERM));
	return 0;
}

/* Each of @paths readable (and /dev/kvm writable) by who we are now; else a
 * usage error naming @why (what made us this user). */
int sbx_check_readable(const char *const *paths, int n, const char *why)
{
	for (int i = 0; i < n; i++) {
		int mode = strcmp(paths[i], "/dev/kvm") ? R_OK : R_OK | W_OK;
		if (access(paths[i], mode) < 0)
			return sbx_usage_error("%s: uid %u cannot %s %s: %s", why, geteuid(),
					       mode & W_OK ? "open" : "read", paths[i],
					       strerror(errno));
	}
	return 0;
}

/* Every capability but @keep (a mask of CAP_* bits, kept only if held). */
static int drop_caps(uint64_t keep)
{
	if (capng_get_caps_process() < 0)
		return sbx_fail("capabilities", strerror(errno));
	bool setpcap = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP) == 1;
	uint64_t held = 0;
	for (unsigned c = 0; c < 64; c++)
		if ((keep >> c & 1) && capng_have_capability(CAPNG_PERMITTED, c) == 1)
			held |= 1ull << c;
	capng_clear(CAPNG_SELECT_BOTH);
	for (unsigned c = 0; c < 64; c++)
		if (held >> c & 1)
			capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET,
				     c);
	if ((setpcap && capng_apply(CAPNG_SELECT_BOUNDS) < 0) || capng_apply(CAPNG_SELECT_CAPS) < 0)
		return sbx_fail("dropping capabilities", strerror(errno));
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* EINVAL before 4.3 */
	return 0;
}

static int lower_limits(void)
{
	struct rlimit core = { 0, 0 }, fds;
	if (setrlimit(RLIMIT_CORE, &core) < 0 || getrlimit(RLIMIT_NOFILE, &fds) < 0)
		return sbx_fail("resource limits", strerror(errno));
	if (fds.rlim_max > MAX_FDS)
		fds.rlim_max = MAX_FDS;
	if (fds.rlim_cur > fds.rlim_max)
		fds.rlim_cur = fds.rlim_max;
	return setrlimit(RLIMIT_NOFILE, &fds) < 0 ? sbx_fail("resource limits", strerror(errno)) : 0;
}

int sbx_lockdown(uint64_t keep_caps)
{
	int r = drop_caps(keep_caps);
	if (!r && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		   prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0))
		r = sbx_fail("prctl", strerror(errno));
	return r ? r : lower_limits();
}

/* What root must still hold while microvm_restore() reopens a template's
 * network: passt (started as root) switches itself to nobody, a TAP it does
 * not own needs CAP_NET_ADMIN. Unknown for a template made before
 * sandbox.host existed: both. The VM's threads, created by that restore,
 * keep these; everything else is gone before. */
uint64_t sbx_restore_caps(const struct sbx_guest *g)
{
	uint64_t user = 1ull << CAP_SETUID | 1ull << CAP_SETGID, tap = 1ull << CAP_NET_ADMIN;
	if (!g->tpl_known)
		return user | tap;
	return g->tpl_net == SBX_NET_USER ? user : g->tpl_net == SBX_NET_TAP ? tap : 0;
}
