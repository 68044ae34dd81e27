/*
 * microvm-sandbox: run one command in a throw-away microVM and pass its
 * output and exit status through, like a container runtime's "run"; or save
 * a booted, agent-ready VM as a template that later runs restore (warm
 * start). docs/sandbox.md is the manual; `microvm-sandbox --help` the summary.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

double sbx_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int sbx_fail(const char *what, const char *detail)
{
	fprintf(stderr, "microvm-sandbox: %s: %s\n", what, detail);
	return SBX_EXIT_FAILED;
}

static void report_json(const struct sbx_opts *o, const struct sbx_vm *v,
			const struct sbx_result *r, double total_ms)
{
	FILE *f = strcmp(o->json, "-") ? fopen(o->json, "we") : stderr;
	if (!f) {
		fprintf(stderr, "microvm-sandbox: --json %s: %s\n", o->json, strerror(errno));
		return;
	}
	fprintf(f,
		"{\"status\": %d, \"exit_code\": %d, \"signal\": %d, \"timed_out\": %s, "
		"\"start\": \"%s\", \"start_ms\": %.3f, \"command_ms\": %.3f, \"total_ms\": %.3f, "
		"\"peak_memory_kib\": %llu}\n",
		r->status, r->exit_code, r->signal, r->timed_out ? "true" : "false",
		v->restored ? "restore" : "boot", v->start_ms, r->command_ms, total_ms,
		(unsigned long long)r->max_rss_kib);
	if (f != stderr)
		fclose(f);
}

/* The guest for a run: the template's (--from) or one booted now. */
static int get_vm(const struct sbx_opts *o, struct sbx_guest *g, struct sbx_vm *v)
{
	memset(g, 0, sizeof(*g));
	if (!o->from) {
		int r = sbx_resolve_guest(o, g);
		return r ? r : sbx_vm_boot(o, g, v);
	}
	char p[4200];
	snprintf(p, sizeof(p), "%s/state.dtb", o->from);
	if (access(p, R_OK) < 0)
		return sbx_usage_error("--from %s: not a template (no state.dtb: %s)", o->from,
				       strerror(errno));
	snprintf(p, sizeof(p), "%s/sandbox.config", o->from);
	if (access(p, F_OK) == 0 && sbx_procconf_load(p, &g->pc) < 0)
		return sbx_fail(p, "unreadable image configuration");
	return sbx_vm_restore(o, v);
}

static int cmd_run(const struct sbx_opts *o)
{
	double t0 = sbx_now_ms();
	struct sbx_guest *g = calloc(1, sizeof(*g));
	struct sbx_vm v = { .console = -1 };
	struct sbx_result res = { 0 };
	if (!g)
		return sbx_fail("memory", strerror(ENOMEM));
	res.status = get_vm(o, g, &v);
	for (int i = 0; i < o->ncopy_in && !res.status; i++)
		res.status = sbx_copy_in(v.agent, o->copy_in[i]);
	if (!res.status)
		sbx_run_command(o, &g->pc, v.agent, &res);
	bool ran = v.agent && res.status != SBX_EXIT_FAILED && res.status != SBX_EXIT_USAGE;
	for (int i = 0; i < o->ncopy_out && ran; i++)
		if (sbx_copy_out(v.agent, o->copy_out[i]))
			res.status = SBX_EXIT_FAILED;
	if (o->verbose)
		fprintf(stderr, "microvm-sandbox: VM %s in %.1f ms, command took %.1f ms\n",
			v.restored ? "restored" : "booted", v.start_ms, res.command_ms);
	if (o->json)
		report_json(o, &v, &res, sbx_now_ms() - t0);
	sbx_vm_destroy(&v);
	sbx_procconf_free(&g->pc);
	free(g);
	return res.status;
}

static int cmd_prepare(const struct sbx_opts *o)
{
	struct sbx_guest *g = calloc(1, sizeof(*g));
	struct sbx_vm v = { .console = -1 };
	if (!g)
		return sbx_fail("memory", strerror(ENOMEM));
	int r = sbx_resolve_guest(o, g);
	if (!r)
		r = sbx_vm_boot(o, g, &v);
	double boot_ms = v.start_ms;
	if (!r)
		r = sbx_vm_save(&v, o->snapshot);
	if (!r)
		r = sbx_template_save_config(g, o->snapshot);
	if (!r)
		fprintf(stderr, "microvm-sandbox: template saved in %s (booted to agent-ready in "
				"%.1f ms)\n", o->snapshot, boot_ms);
	sbx_vm_destroy(&v);
	sbx_procconf_free(&g->pc);
	free(g);
	return r;
}

int main(int argc, char **argv)
{
	struct sbx_opts o;
	bool done;
	int r = sbx_parse(argc, argv, &o, &done);
	if (r || done)
		return r;
	return o.mode == SBX_PREPARE ? cmd_prepare(&o) : cmd_run(&o);
}
