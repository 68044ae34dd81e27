/* The host files a run touches once its VM exists: --copy-in sources,
 * --copy-out destinations and the --json report. They are opened first
 * thing, so that the rest of the run (and a VMM in --jail's empty root)
 * needs no path on the host; then every other fd the tool inherited is
 * closed: the VMM keeps no descriptor it was not given for a reason (a
 * terminal, a socket, a directory of its parent's). stdin, stdout and
 * stderr stay. A --copy-out destination is created here (empty) and
 * written after the command; if that copy fails, a file created here is
 * removed again (not from inside --jail, where only the file is left). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

/* "A:B" -> the host side: A for copy-in, B for copy-out. */
static void host_side(const char *spec, bool out, char *buf, size_t len)
{
	const char *colon = strchr(spec, ':');
	if (out)
		snprintf(buf, len, "%s", colon + 1);
	else
		snprintf(buf, len, "%.*s", (int)(colon - spec), spec);
}

static int open_out(const char *path, bool *created)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	*created = fd >= 0;
	if (fd < 0 && errno == EEXIST)
		fd = open(path, O_WRONLY | O_CLOEXEC);
	return fd;
}

static int open_copies(const struct sbx_opts *o, struct sbx_files *f)
{
	char path[4096];
	for (int i = 0; i < o->ncopy_in; i++) {
		host_side(o->copy_in[i], false, path, sizeof(path));
		if ((f->in[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return sbx_fail(path, strerror(errno));
	}
	for (int i = 0; i < o->ncopy_out; i++) {
		host_side(o->copy_out[i], true, path, sizeof(path));
		if ((f->out[i] = open_out(path, &f->created[i])) < 0)
			return sbx_fail(path, strerror(errno));
	}
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Close every fd from 3 up that is not one of @f's. */
static void close_others(const struct sbx_files *f)
{
	int keep[2 * SBX_MAX_LIST + 1], n = 0;
	for (int i = 0; i < SBX_MAX_LIST; i++) {
		if (f->in[i] > 2)
			keep[n++] = f->in[i];
		if (f->out[i] > 2)
			keep[n++] = f->out[i];
	}
	if (f->json && fileno(f->json) > 2)
		keep[n++] = fileno(f->json);
	qsort(keep, (size_t)n, sizeof(keep[0]), cmp_int);
	unsigned from = 3;
	for (int i = 0; i < n; i++) {
		if ((unsigned)keep[i] > from)
			close_range(from, (unsigned)keep[i] - 1, 0);
		from = (unsigned)keep[i] + 1;
	}
	close_range(from, ~0u, 0);
}

int sbx_files_open(const struct sbx_opts *o, struct sbx_files *f)
{
	*f = (struct sbx_files){ .json = NULL };
	memset(f->in, -1, sizeof(f->in));
	memset(f->out, -1, sizeof(f->out));
	int r = open_copies(o, f);
	if (!r && o->json && !(f->json = strcmp(o->json, "-") ? fopen(o->json, "we") : stderr))
		r = sbx_fail(o->json, strerror(errno));
	close_others(f);
	return r;
}

void sbx_files_close(struct sbx_files *f)
{
	for (int i = 0; i < SBX_MAX_LIST; i++) {
		if (f->in[i] >= 0)
			close(f->in[i]);
		if (f->out[i] >= 0)
			close(f->out[i]);
		f->in[i] = f->out[i] = -1;
	}
	if (f->json && f->json != stderr)
		fclose(f->json);
	f->json = NULL;
}
