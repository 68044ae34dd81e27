/* microvm-sandbox's command line. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

void sbx_usage(FILE *f)
{
	fputs("usage: microvm-sandbox run [options] [--] CMD [ARGS...]\n"
	      "       microvm-sandbox run --from DIR [options] [--] CMD [ARGS...]\n"
	      "       microvm-sandbox prepare --snapshot DIR [options]\n"
	      "\n"
	      "Runs one command in a throw-away microVM and exits with its status. `prepare`\n"
	      "boots a VM to agent-ready and saves it as a template; `run --from` restores\n"
	      "it (a copy-on-write clone: a warm start) instead of booting.\n"
	      "\n"
	      "guest:\n"
	      "  --image debian|PATH|oci:DIR[:TAG]\n"
	      "                      root filesystem (default: debian, the project's image);\n"
	      "                      PATH is an ext4 image with the agent at /.microvm/agent;\n"
	      "                      oci:DIR is an OCI image layout (converted and cached).\n"
	      "                      The image is attached read-only; writes go to an overlay\n"
	      "                      in guest memory and vanish with the VM.\n"
	      "  --kernel PATH       guest kernel (default: the project's, cached)\n"
	      "  --initrd PATH       boot this initramfs (its /init the agent) instead of an image\n"
	      "  --cpus N            vCPUs (default 1)\n"
	      "  --mem MIB           guest RAM in MiB (default 512)\n"
	      "network:\n"
	      "  --net none|user|tap:NAME\n"
	      "                      none (default): no network interface; user: user-mode\n"
	      "                      networking through passt(1) (DHCP, DNS, NAT to the\n"
	      "                      host's network; the gateway address reaches the\n"
	      "                      host's loopback); tap:NAME: an existing TAP interface\n"
	      "  -p, --publish HOSTPORT:GUESTPORT\n"
	      "                      forward TCP HOSTPORT on the host to GUESTPORT in the\n"
	      "                      guest (repeatable; needs --net user)\n"
	      "command:\n"
	      "  -e, --env NAME=VALUE   add to the environment (repeatable)\n"
	      "  -w, --workdir DIR      working directory in the guest\n"
	      "  -u, --user USER[:GROUP]  run as this user (name or id; default root or the\n"
	      "                      image's User)\n"
	      "  -t, --timeout SECONDS  kill the command after this long (exit 124)\n"
	      "  -i, --stdin         pass stdin through even when it is a terminal\n"
	      "      --no-stdin      the command's stdin is /dev/null (default: stdin is\n"
	      "                      passed through unless it is a terminal)\n"
	      "  --copy-in HOST:GUEST   copy a file into the guest before the command\n"
	      "  --copy-out GUEST:HOST  copy a file out afterwards (also after a failure)\n"
	      "host side (docs/security.md):\n"
	      "  --jail              run the VMM in new namespaces (user unless root, PID,\n"
	      "                      mount, network, IPC, UTS, cgroup) with an empty\n"
	      "                      read-only root holding only /dev/kvm and the guest's\n"
	      "                      files (run only; --from needs a template with no network)\n"
	      "  --host-user USER[:GROUP]\n"
	      "                      started as root: become USER (name or id; its groups)\n"
	      "                      once the guest's files are found; USER needs /dev/kvm\n"
	      "                      (the kvm group) and read access to those files\n"
	      "output:\n"
	      "  --json FILE         write a JSON report (exit code, signal, timed_out,\n"
	      "                      start kind and ms, command ms, peak memory) to FILE\n"
	      "                      (- = stderr, after everything else)\n"
	      "  -v, --verbose       guest console and timings on stderr; when the guest\n"
	      "                      fails the run, where its vCPUs and queues stand\n"
	      "  -h, --help          this text\n"
	      "\n"
	      "exit status: the command's own; 128+N if signal N killed it; 124 timeout;\n"
	      "125 the sandbox failed; 126 the command could not be executed; 127 it was\n"
	      "not found; 2 bad usage. See docs/sandbox.md.\n",
	      f);
}

int sbx_usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("microvm-sandbox: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'microvm-sandbox --help'.\n", stderr);
	return SBX_EXIT_USAGE;
}

/* Whole-string unsigned number in [lo, hi]. */
static int parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int add_list(const char **list, int *n, const char *v, const char *what, char sep)
{
	if (*n >= SBX_MAX_LIST)
		return sbx_usage_error("at most %d %s options", SBX_MAX_LIST, what);
	const char *p = strchr(v, sep);
	if (!p || p == v || (sep == ':' && !p[1]))
		return sbx_usage_error("%s wants %s, not \"%s\"", what,
				       sep == '=' ? "NAME=VALUE" : "SOURCE:DEST", v);
	list[(*n)++] = v;
	return 0;
}

/* --net none|user|tap:NAME */
static int take_net(const char *arg, struct sbx_opts *o)
{
	o->tap = NULL;
	if (!strcmp(arg, "none"))
		o->net = SBX_NET_NONE;
	else if (!strcmp(arg, "user"))
		o->net = SBX_NET_USER;
	else if (!strncmp(arg, "tap:", 4) && arg[4] && strlen(arg + 4) < 16) {
		o->net = SBX_NET_TAP;
		o->tap = arg + 4;
	} else
		return sbx_usage_error("--net wants none, user or tap:NAME, not \"%s\"", arg);
	return 0;
}

/* --publish HOSTPORT:GUESTPORT */
static int take_publish(const char *arg, struct sbx_opts *o)
{
	if (o->npublish >= SBX_MAX_LIST)
		return sbx_usage_error("at most %d --publish options", SBX_MAX_LIST);
	char host[8], guest[8];
	double h, g;
	const char *colon = strchr(arg, ':');
	size_t hl = colon ? (size_t)(colon - arg) : 0;
	if (!colon || hl >= sizeof(host) || strlen(colon + 1) >= sizeof(guest))
		return sbx_usage_error("--publish wants HOSTPORT:GUESTPORT, not \"%s\"", arg);
	memcpy(host, arg, hl);
	host[hl] = 0;
	strcpy(guest, colon + 1);
	if (parse_num(host, 1, 65535, &h) < 0 || h != (uint16_t)h ||
	    parse_num(guest, 1, 65535, &g) < 0 || g != (uint16_t)g)
		return sbx_usage_error("--publish wants ports 1..65535, not \"%s\"", arg);
	o->publish[o->npublish++] = (struct sbx_publish){ (uint16_t)h, (uint16_t)g };
	return 0;
}

static const struct option long_opts[] = {
	{ "image", required_argument, NULL, 'I' },    { "kernel", required_argument, NULL, 'k' },
	{ "initrd", required_argument, NULL, 'r' },   { "from", required_argument, NULL, 'f' },
	{ "snapshot", required_argument, NULL, 's' }, { "cpus", required_argument, NULL, 'c' },
	{ "mem", required_argument, NULL, 'm' },      { "env", required_argument, NULL, 'e' },
	{ "workdir", required_argument, NULL, 'w' },  { "user", required_argument, NULL, 'u' },
	{ "timeout", required_argument, NULL, 't' },  { "stdin", no_argument, NULL, 'i' },
	{ "no-stdin", no_argument, NULL, 'N' },       { "copy-in", required_argument, NULL, 'C' },
	{ "copy-out", required_argument, NULL, 'O' }, { "json", required_argument, NULL, 'j' },
	{ "verbose", no_argument, NULL, 'v' },        { "help", no_argument, NULL, 'h' },
	{ "net", required_argument, NULL, 'n' },      { "publish", required_argument, NULL, 'p' },
	{ "jail", no_argument, NULL, 'J' },           { "host-user", required_argument, NULL, 'H' },
	{ NULL, 0, NULL, 0 },
};

/* One option @c with argument @arg into @o. 0 or SBX_EXIT_USAGE. */
static int take_option(int c, const char *arg, struct sbx_opts *o)
{
	double v;
	switch (c) {
	case 'I': o->image = arg; return 0;
	case 'k': o->kernel = arg; return 0;
	case 'r': o->initrd = arg; return 0;
	case 'f': o->from = arg; return 0;
	case 's': o->snapshot = arg; return 0;
	case 'w': o->workdir = arg; return 0;
	case 'u':
		o->user = arg;
		return *arg ? 0 : sbx_usage_error("--user wants USER[:GROUP]");
	case 'j': o->json = arg; return 0;
	case 'i': o->stdin_mode = 1; return 0;
	case 'N': o->stdin_mode = 0; return 0;
	case 'v': o->verbose = true; return 0;
	case 'J': o->jail = true; return 0;
	case 'H':
		o->host_user = arg;
		return *arg ? 0 : sbx_usage_error("--host-user wants USER[:GROUP]");
	case 'e': return add_list(o->env, &o->nenv, arg, "--env", '=');
	case 'C': return add_list(o->copy_in, &o->ncopy_in, arg, "--copy-in", ':');
	case 'O': return add_list(o->copy_out, &o->ncopy_out, arg, "--copy-out", ':');
	case 'n': return take_net(arg, o);
	case 'p': return take_publish(arg, o);
	case 'c':
		if (parse_num(arg, 1, 64, &v) < 0 || v != (uint32_t)v)
			return sbx_usage_error("--cpus wants 1..64, not \"%s\"", arg);
		o->cpus = (uint32_t)v;
		return 0;
	case 'm':
		if (parse_num(arg, 16, 1 << 20, &v) < 0 || v != (uint64_t)v)
			return sbx_usage_error("--mem wants MiB (16..1048576), not \"%s\"", arg);
		o->mem_mib = (uint64_t)v;
		return 0;
	case 't':
		if (parse_num(arg, 0.001, 1e6, &v) < 0)
			return sbx_usage_error("--timeout wants seconds > 0, not \"%s\"", arg);
		o->timeout_s = v;
		return 0;
	default:
		return sbx_usage_error("unknown option");
	}
}

/* Which options each mode takes, checked after parsing. */
static int check_mode(const struct sbx_opts *o)
{
	if (o->npublish && o->net != SBX_NET_USER)
		return sbx_usage_error("--publish needs --net user");
	if (o->mode == SBX_PREPARE) {
		if (!o->snapshot)
			return sbx_usage_error("prepare needs --snapshot DIR");
		if (o->from || o->ncmd || o->ncopy_in || o->ncopy_out || o->json)
			return sbx_usage_error("prepare takes no command, --from, --copy-* or --json");
		if (o->jail)
			return sbx_usage_error("prepare takes no --jail (it writes the template to the "
					       "host); run --jail --from DIR jails its clones");
		return 0;
	}
	if (o->from && (o->net || o->npublish))
		return sbx_usage_error("--from DIR restores the template's network: no --net or "
				       "--publish (give them to prepare)");
	if (o->snapshot)
		return sbx_usage_error("--snapshot belongs to prepare; run takes --from DIR");
	if (o->from && (o->image || o->kernel || o->initrd || o->cpus || o->mem_mib))
		return sbx_usage_error("--from DIR restores the template's guest: no --image, "
				       "--kernel, --initrd, --cpus or --mem");
	if (o->image && o->initrd)
		return sbx_usage_error("--image and --initrd exclude each other");
	return 0;
}

int sbx_parse(int argc, char **argv, struct sbx_opts *o, bool *done)
{
	*o = (struct sbx_opts){ .stdin_mode = -1 };
	*done = false;
	if (argc < 2)
		return sbx_usage_error("missing subcommand (run or prepare)");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		sbx_usage(stdout);
		*done = true;
		return 0;
	}
	if (strcmp(argv[1], "run") && strcmp(argv[1], "prepare"))
		return sbx_usage_error("unknown subcommand \"%s\" (run or prepare)", argv[1]);
	o->mode = argv[1][0] == 'r' ? SBX_RUN : SBX_PREPARE;
	optind = 2;
	opterr = 1;
	int c;
	while ((c = getopt_long(argc, argv, "+e:w:u:t:p:ivh", long_opts, NULL)) != -1) {
		if (c == 'h') {
			sbx_usage(stdout);
			*done = true;
			return 0;
		}
		if (c == '?' || c == ':')
			return sbx_usage_error("bad option (see above)");
		int r = take_option(c, optarg, o);
		if (r)
			return r;
	}
	o->cmd = argv + optind;
	o->ncmd = argc - optind;
	return check_mode(o);
}
