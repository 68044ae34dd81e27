/* An image's process configuration: the sidecar guest/rootfs/build-oci.sh
 * writes next to the image ("<image>.config"): NUL-terminated records
 * "key=value" with keys entrypoint and cmd (repeated, in order), env
 * (repeated, NAME=VALUE), cwd and user. Unknown keys are ignored. A template
 * (prepare --snapshot DIR) keeps a copy as DIR/sandbox.config. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"

#define CONFIG_MAX (1u << 20)

static char *read_small(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char *b = malloc((size_t)st.st_size + 1);
	ssize_t n = b ? read(fd, b, (size_t)st.st_size) : -1;
	close(fd);
	if (n != st.st_size) {
		free(b);
		return NULL;
	}
	b[n] = 0;
	*len = (size_t)n;
	return b;
}

static int push(char ***list, const char *v)
{
	size_t n = 0;
	while (*list && (*list)[n])
		n++;
	char **nl = realloc(*list, (n + 2) * sizeof(*nl));
	if (!nl)
		return -1;
	*list = nl;
	nl[n] = strdup(v);
	nl[n + 1] = NULL;
	return nl[n] ? 0 : -1;
}

static int take_record(struct sbx_procconf *pc, const char *rec)
{
	const char *eq = strchr(rec, '=');
	if (!eq)
		return -1;
	size_t kl = (size_t)(eq - rec);
	const char *v = eq + 1;
#define KEY(k) (kl == strlen(k) && !memcmp(rec, k, kl))
	if (KEY("entrypoint"))
		return push(&pc->entrypoint, v);
	if (KEY("cmd"))
		return push(&pc->cmd, v);
	if (KEY("env"))
		return strchr(v, '=') ? push(&pc->env, v) : -1;
	char **one = KEY("cwd") ? &pc->cwd : KEY("user") ? &pc->user : NULL;
#undef KEY
	if (!one)
		return 0;
	free(*one);
	*one = *v ? strdup(v) : NULL;
	return !*v || *one ? 0 : -1;
}

int sbx_procconf_load(const char *path, struct sbx_procconf *pc)
{
	memset(pc, 0, sizeof(*pc));
	size_t len;
	char *b = read_small(path, &len);
	if (!b || (len && b[len - 1]))
		goto bad;
	for (size_t off = 0; off < len; off += strlen(b + off) + 1)
		if (take_record(pc, b + off) < 0)
			goto bad;
	free(b);
	return 0;
bad:
	free(b);
	sbx_procconf_free(pc);
	return -1;
}

static void free_list(char **l)
{
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
}

void sbx_procconf_free(struct sbx_procconf *pc)
{
	free_list(pc->entrypoint);
	free_list(pc->cmd);
	free_list(pc->env);
	free(pc->cwd);
	free(pc->user);
	memset(pc, 0, sizeof(*pc));
}

int sbx_template_save_config(const struct sbx_guest *g, const char *dir)
{
	char dst[4200];
	snprintf(dst, sizeof(dst), "%s/sandbox.config", dir);
	if (!*g->config) {
		unlink(dst);
		return 0;
	}
	size_t len;
	char *b = read_small(g->config, &len);
	int fd = b ? open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
	int ok = fd >= 0 && write(fd, b, len) == (ssize_t)len;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	free(b);
	return ok ? 0 : sbx_fail(dst, "could not save the image configuration");
}
