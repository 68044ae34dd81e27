/* What a template needs from the host, besides its own files: the root
 * image it refers to and the kind of network its clones reopen. prepare
 * writes them to DIR/sandbox.host ("image=PATH\n", absent with an
 * initramfs, and "net=none|user|tap\n"); run --from reads them to know,
 * before restoring, which host files the clone opens (--jail binds them
 * into its empty root) and whether passt or a TAP is started during the
 * restore (which capabilities root keeps until then; --jail refuses it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

#define HOST_FILE "sandbox.host"

static const char *const net_names[] = { "none", "user", "tap" };

int sbx_template_save_host(const struct sbx_opts *o, const struct sbx_guest *g, const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/" HOST_FILE, dir);
	FILE *f = fopen(path, "we");
	if (!f)
		return sbx_fail(path, strerror(errno));
	if (*g->image)
		fprintf(f, "image=%s\n", g->image);
	fprintf(f, "net=%s\n", net_names[o->net]);
	return fclose(f) == 0 ? 0 : sbx_fail(path, strerror(errno));
}

static int take_line(char *line, struct sbx_guest *g)
{
	line[strcspn(line, "\n")] = 0;
	if (!strncmp(line, "image=", 6) && line[6] == '/') {
		snprintf(g->image, sizeof(g->image), "%.4095s", line + 6);
		return 0;
	}
	for (size_t i = 0; !strncmp(line, "net=", 4) && i < 3; i++)
		if (!strcmp(line + 4, net_names[i])) {
			g->tpl_net = (enum sbx_net)i;
			return 1;
		}
	return -1;
}

/* 0 with g->tpl_known set, 0 without it for a template made before this
 * file existed, SBX_EXIT_FAILED for a file that is not ours. */
int sbx_template_load_host(const char *dir, struct sbx_guest *g)
{
	char path[4200], line[4200];
	snprintf(path, sizeof(path), "%s/" HOST_FILE, dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : sbx_fail(path, strerror(errno));
	int have_net = 0, bad = 0;
	while (fgets(line, sizeof(line), f)) {
		int r = take_line(line, g);
		bad |= r < 0;
		have_net |= r > 0;
	}
	fclose(f);
	if (bad || !have_net)
		return sbx_fail(path, "not a template's host file");
	g->tpl_known = true;
	return 0;
}
