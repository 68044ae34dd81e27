/*
 * microvm-sandbox: run one command in a throw-away microVM and pass its
 * output and exit status through, like a container runtime's "run"; or save
 * a booted, agent-ready VM as a template that later runs restore (warm
 * start). docs/sandbox.md is the manual; `microvm-sandbox --help` the summary.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

static void report_json(FILE *f, const struct sbx_vm *v, const struct sbx_result *r,
			double total_ms)
{
	fprintf(f,
		"{\"status\": %d, \"exit_code\": %d, \"signal\": %d, \"timed_out\": %s, "
		"\"start\": \"%s\", \"start_ms\": %.3f, \"command_ms\": %.3f, \"total_ms\": %.3f, "
		"\"peak_memory_kib\": %llu}\n",
		r->status, r->exit_code, r->signal, r->timed_out ? "true" : "false",
		v->restored ? "restore" : "boot", v->start_ms, r->command_ms, total_ms,
		(unsigned long long)r->max_rss_kib);
	fflush(f);
}

/* --from DIR: the template, and what it needs from the host. */
static int find_template(const struct sbx_opts *o, struct sbx_guest *g)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/state.dtb", o->from);
	if (access(p, R_OK) < 0 || !realpath(o->from, g->tpl))
		return sbx_usage_error("--from %s: not a template (no state.dtb: %s)", o->from,
				       strerror(errno));
	snprintf(p, sizeof(p), "%s/sandbox.config", g->tpl);
	if (access(p, F_OK) == 0 && sbx_procconf_load(p, &g->pc) < 0)
		return sbx_fail(p, "unreadable image configuration");
	int r = sbx_template_load_host(g->tpl, g);
	if (r || !o->jail)
		return r;
	if (!g->tpl_known)
		return sbx_usage_error("--jail --from %s: the template predates --jail (no "
				       "sandbox.host): prepare it again", o->from);
	if (g->tpl_net != SBX_NET_NONE)
		return sbx_usage_error("--jail --from %s: the template has a network, which a "
				       "restore reopens (passt, a TAP) from inside the jail: "
				       "not supported; run it without --jail", o->from);
	return 0;
}

/* What to boot or restore: found before any privilege is dropped (the
 * guest scripts may build images, which needs root). */
static int find_guest(const struct sbx_opts *o, struct sbx_guest *g)
{
	memset(g, 0, sizeof(*g));
	return o->from ? find_template(o, g) : sbx_resolve_guest(o, g);
}

/* The host files the VM opens once it runs: /dev/kvm and the guest's, or
 * the template's. */
static int vm_inputs(const struct sbx_opts *o, const struct sbx_guest *g, const char **paths)
{
	int n = 0;
	paths[n++] = "/dev/kvm";
	if (o->from)
		paths[n++] = g->tpl;
	else
		paths[n++] = g->kernel;
	if (*g->initrd)
		paths[n++] = g->initrd;
	if (*g->image)
		paths[n++] = g->image;
	return n;
}

/* --host-user: become it now (its ids resolved before anything else ran),
 * and check it can open what the VM will. */
static int become_host_user(const struct sbx_opts *o, const struct sbx_guest *g,
			    const struct sbx_hostuser *u)
{
	const char *paths[8];
	if (!o->host_user)
		return 0;
	int r = sbx_hostuser_become(o->host_user, u);
	return r ? r : sbx_check_readable(paths, vm_inputs(o, g, paths), "--host-user");
}

/* --host-user, then --jail's fork. 0 to go on as the VMM; else the tool's
 * exit status: in --jail's parent (*parent set), the VMM's. */
static int confine(const struct sbx_opts *o, const struct sbx_guest *g,
		   const struct sbx_hostuser *u, struct sbx_files *f, bool *parent)
{
	int r = become_host_user(o, g, u);
	if (r || !o->jail)
		return r;
	pid_t pid = sbx_jail_fork();
	if (pid <= 0)
		return pid < 0 ? SBX_EXIT_FAILED : 0;
	*parent = true;
	sbx_files_close(f);
	r = sbx_lockdown(0);
	if (r)
		kill(pid, SIGKILL);
	int st = sbx_jail_wait(pid);
	return r ? r : st;
}

/* Before anything runs: the host files and --host-user's ids. */
static int prelude(const struct sbx_opts *o, struct sbx_files *f, struct sbx_hostuser *u)
{
	int r = sbx_files_open(o, f);
	return r || !o->host_user ? r : sbx_hostuser_resolve(o->host_user, u);
}

/* The VM, every wall up before its threads exist and its guest runs:
 * a boot is configured (passt, a TAP) before the jail and the lockdown; a
 * restore happens after them (root keeps what reopening the template's
 * network needs until it is done). */
static int get_vm(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v)
{
	const char *paths[8];
	int n = vm_inputs(o, g, paths), r = 0;
	sbx_vm_init(o, v);
	if (o->from) {
		if (o->jail)
			r = sbx_jail_enter(paths, n);
		if (!r)
			r = sbx_lockdown(o->jail ? 0 : sbx_restore_caps(g));
		if (!r)
			r = sbx_vm_restore(o, g, v);
		return r ? r : sbx_lockdown(0);
	}
	r = sbx_vm_configure(o, g, v);
	if (!r && o->jail)
		r = sbx_jail_enter(paths, n);
	if (!r)
		r = sbx_lockdown(0);
	return r ? r : sbx_vm_boot(v);
}

static void run_in_vm(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v,
		      const struct sbx_files *f, struct sbx_result *res)
{
	for (int i = 0; i < o->ncopy_in && !res->status; i++)
		res->status = sbx_copy_in(v->agent, o->copy_in[i], f->in[i]);
	if (!res->status)
		sbx_run_command(o, &g->pc, v->agent, res);
	if (res->status == SBX_EXIT_FAILED) {
		sbx_vm_stopped(v, "during the run"); /* why, if it did */
		sbx_vm_report(v);
	}
	bool ran = v->agent && res->status != SBX_EXIT_FAILED && res->status != SBX_EXIT_USAGE;
	for (int i = 0; i < o->ncopy_out && ran; i++)
		if (sbx_copy_out(v->agent, o->copy_out[i], f->out[i], f->created[i]))
			res->status = SBX_EXIT_FAILED;
}

static int cmd_run(const struct sbx_opts *o)
{
	double t0 = sbx_now_ms();
	struct sbx_files files;
	struct sbx_guest *g = calloc(1, sizeof(*g));
	struct sbx_vm v = { .console = -1 };
	struct sbx_result res = { 0 };
	struct sbx_hostuser hu;
	bool parent = false;
	if (!g)
		return sbx_fail("memory", strerror(ENOMEM));
	res.status = prelude(o, &files, &hu);
	if (!res.status)
		res.status = find_guest(o, g);
	if (!res.status)
		res.status = confine(o, g, &hu, &files, &parent);
	if (!res.status && !parent) /* --jail's parent is done: it waited */
		res.status = get_vm(o, g, &v);
	if (!res.status && !parent)
		run_in_vm(o, g, &v, &files, &res);
	if (o->verbose && !parent)
		fprintf(stderr, "microvm-sandbox: VM %s in %.1f ms, command took %.1f ms\n",
			v.restored ? "restored" : "booted", v.start_ms, res.command_ms);
	if (files.json && !parent)
		report_json(files.json, &v, &res, sbx_now_ms() - t0);
	sbx_vm_destroy(&v);
	sbx_files_close(&files);
	sbx_procconf_free(&g->pc);
	free(g);
	return res.status;
}

static int cmd_prepare(const struct sbx_opts *o)
{
	struct sbx_files files;
	struct sbx_guest *g = calloc(1, sizeof(*g));
	struct sbx_vm v = { .console = -1 };
	struct sbx_hostuser hu;
	if (!g)
		return sbx_fail("memory", strerror(ENOMEM));
	int r = prelude(o, &files, &hu); /* no files: closes what was inherited */
	if (!r)
		r = find_guest(o, g);
	if (!r)
		r = become_host_user(o, g, &hu); /* prepare takes no --jail */
	if (!r)
		r = get_vm(o, g, &v);
	double boot_ms = v.start_ms;
	if (!r)
		r = sbx_vm_save(&v, o->snapshot);
	if (!r)
		r = sbx_template_save_config(g, o->snapshot);
	if (!r)
		r = sbx_template_save_host(o, g, o->snapshot);
	if (!r)
		fprintf(stderr, "microvm-sandbox: template saved in %s (booted to agent-ready in "
				"%.1f ms)\n", o->snapshot, boot_ms);
	sbx_vm_destroy(&v);
	sbx_files_close(&files);
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
