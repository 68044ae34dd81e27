/* Resolving EXEC's user spec ("name", "uid", "name:group", "uid:gid") in
 * the guest's own /etc/passwd and /etc/group. */
#ifndef MICROVM_AGENT_USER_H
#define MICROVM_AGENT_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct user_cred {
	uid_t uid;
	gid_t gid;
	char home[256]; /* the passwd entry's home, "" if none */
};

/* Fill @c from @spec. A numeric user or group needs no entry; the primary
 * group is the passwd entry's, or 0 for a numeric user without one (as
 * container runtimes do). 0, or a positive errno with the reason in @why
 * (ENOENT: no such user/group; EINVAL: malformed spec). */
int user_resolve(const char *spec, struct user_cred *c, char *why, size_t whylen);

/* In the command's child, before exec: supplementary groups = the primary
 * group only, then gid, then uid. 0 or errno. */
int user_switch(const struct user_cred *c);

#endif
