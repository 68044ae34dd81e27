/* See user.h. The files are parsed here rather than with getpwnam(): the
 * agent is a static binary, and static glibc's NSS cannot load modules. */
#include "user.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A decimal id, or -1 if @s is not one (no sign, no spaces, < 2^32-1). */
static long long parse_id(const char *s)
{
	if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10)
		return -1;
	long long v = strtoll(s, NULL, 10);
	return v < 4294967295LL ? v : -1;
}

/* Split line @l (modified) at ':' into up to @max fields. Returns the count. */
static int split_fields(char *l, char **f, int max)
{
	int n = 0;
	l[strcspn(l, "\n")] = 0;
	while (n < max) {
		f[n++] = l;
		char *c = strchr(l, ':');
		if (!c)
			break;
		*c = 0;
		l = c + 1;
	}
	return n;
}

/* Find the line of @path whose field 0 is @name (or, with @name NULL, whose
 * field 2 is @id) with at least @need fields; copy its fields into @f (which
 * point into @buf). 0, or -1 if none. */
static int find_entry(const char *path, const char *name, long long id, int need, char *buf,
		      size_t buflen, char **f)
{
	FILE *fp = fopen(path, "re");
	if (!fp)
		return -1;
	int found = -1;
	while (found < 0 && fgets(buf, (int)buflen, fp)) {
		int n = split_fields(buf, f, 7);
		if (n < need || *f[0] == '#')
			continue;
		if (name ? !strcmp(f[0], name) : parse_id(f[2]) == id)
			found = 0;
	}
	fclose(fp);
	return found;
}

static int resolve_user(const char *u, struct user_cred *c, char *why, size_t whylen)
{
	char buf[1024], *f[7];
	long long id = parse_id(u);
	bool found = find_entry("/etc/passwd", id < 0 ? u : NULL, id, 7, buf, sizeof(buf), f) == 0;
	if (!found && id < 0) {
		snprintf(why, whylen, "user %s: not in /etc/passwd", u);
		return ENOENT;
	}
	if (found && (parse_id(f[2]) < 0 || parse_id(f[3]) < 0)) {
		snprintf(why, whylen, "user %s: bad uid or gid in /etc/passwd", u);
		return EINVAL;
	}
	c->uid = (uid_t)(found ? parse_id(f[2]) : id);
	c->gid = found ? (gid_t)parse_id(f[3]) : 0;
	if (found)
		snprintf(c->home, sizeof(c->home), "%s", f[5]);
	return 0;
}

static int resolve_group(const char *g, struct user_cred *c, char *why, size_t whylen)
{
	char buf[4096], *f[7];
	long long id = parse_id(g);
	if (id >= 0) {
		c->gid = (gid_t)id;
		return 0;
	}
	if (find_entry("/etc/group", g, -1, 3, buf, sizeof(buf), f) < 0 || parse_id(f[2]) < 0) {
		snprintf(why, whylen, "group %s: not in /etc/group", g);
		return ENOENT;
	}
	c->gid = (gid_t)parse_id(f[2]);
	return 0;
}

int user_resolve(const char *spec, struct user_cred *c, char *why, size_t whylen)
{
	char s[512];
	memset(c, 0, sizeof(*c));
	if (snprintf(s, sizeof(s), "%s", spec) >= (int)sizeof(s) || !*s || *s == ':') {
		snprintf(why, whylen, "user \"%s\": expected name, uid, name:group or uid:gid", spec);
		return EINVAL;
	}
	char *g = strchr(s, ':');
	if (g)
		*g++ = 0;
	if (g && (!*g || strchr(g, ':'))) {
		snprintf(why, whylen, "user \"%s\": expected name, uid, name:group or uid:gid", spec);
		return EINVAL;
	}
	int r = resolve_user(s, c, why, whylen);
	return r ? r : g ? resolve_group(g, c, why, whylen) : 0;
}

int user_switch(const struct user_cred *c)
{
	if (setgroups(1, &c->gid) < 0 || setgid(c->gid) < 0 || setuid(c->uid) < 0)
		return errno;
	return 0;
}
