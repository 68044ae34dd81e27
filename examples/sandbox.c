/*
 * microvm-sandbox: run one command in a throw-away microVM and pass its
 * output and exit status through, like a container runtime's "run".
 *
 *   microvm-sandbox --kernel PATH --initrd PATH [options] -- CMD [ARGS...]
 *
 * The guest is a Linux kernel with the guest agent as /init (the project's
 * default guest: guest/kernel + guest/initramfs --agent). The command's
 * stdout/stderr stream to ours as they come; with -i our stdin is its
 * stdin. Exit status: the command's, 128+N if signal N killed it, 124 on
 * --timeout, 125 if the sandbox itself failed.
 *
 * --snapshot DIR makes later runs start from a snapshot: the first run
 * boots, waits for the agent, and saves the ready VM to DIR; later runs
 * restore DIR (copy-on-write, milliseconds) instead of booting and reseed
 * the clone's RNG through the agent.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microvm_agent.h>

#define EXIT_SANDBOX 125
#define MAX_FILES 32

struct opts {
	const char *kernel, *initrd, *snapshot, *cwd;
	uint32_t cpus;
	uint64_t mem;
	int timeout_s;
	int interactive, verbose, stats;
	const char *puts[MAX_FILES], *gets[MAX_FILES], *envs[MAX_FILES + 1];
	int nput, nget, nenv;
};

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: microvm-sandbox --kernel PATH --initrd PATH [options] -- CMD [ARGS...]\n"
		"  --cpus N            vCPUs (default 1)\n"
		"  --mem MIB           guest RAM (default 256)\n"
		"  --timeout SECONDS   kill the command after this long (exit 124)\n"
		"  --put HOST:GUEST    copy a file into the guest before running\n"
		"  --get GUEST:HOST    copy a file out of the guest afterwards\n"
		"  --env NAME=VALUE    add to the command's environment\n"
		"  --cwd DIR           working directory in the guest\n"
		"  -i, --interactive   pass our stdin to the command\n"
		"  --snapshot DIR      start from the snapshot in DIR (made on first use)\n"
		"  -v, --verbose       show the guest console and timings on stderr\n"
		"  --stats             show timings on stderr\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'r' },
		{ "cpus", required_argument, NULL, 'c' },   { "mem", required_argument, NULL, 'm' },
		{ "timeout", required_argument, NULL, 't' }, { "put", required_argument, NULL, 'p' },
		{ "get", required_argument, NULL, 'g' },    { "env", required_argument, NULL, 'e' },
		{ "cwd", required_argument, NULL, 'd' },    { "snapshot", required_argument, NULL, 's' },
		{ "interactive", no_argument, NULL, 'i' },  { "verbose", no_argument, NULL, 'v' },
		{ "stats", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .cpus = 1, .mem = 256 };
	int c;
	while ((c = getopt_long(argc, argv, "+ivh", lo, NULL)) != -1) {
		switch (c) {
		case 'k': o->kernel = optarg; break;
		case 'r': o->initrd = optarg; break;
		case 'c': o->cpus = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'm': o->mem = strtoull(optarg, NULL, 10); break;
		case 't': o->timeout_s = atoi(optarg); break;
		case 'd': o->cwd = optarg; break;
		case 's': o->snapshot = optarg; break;
		case 'i': o->interactive = 1; break;
		case 'v': o->verbose = o->stats = 1; break;
		case 'S': o->stats = 1; break;
		case 'p':
		case 'g':
		case 'e': {
			int *n = c == 'p' ? &o->nput : c == 'g' ? &o->nget : &o->nenv;
			const char **v = c == 'p' ? o->puts : c == 'g' ? o->gets : o->envs;
			if (*n >= MAX_FILES || (c != 'e' && !strchr(optarg, ':')) ||
			    (c == 'e' && !strchr(optarg, '='))) {
				usage(stderr);
				return -1;
			}
			v[(*n)++] = optarg;
			break;
		}
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (!o->kernel || !o->initrd || optind >= argc) {
		usage(stderr);
		return -1;
	}
	return optind;
}

static int fail(const char *what, const char *detail)
{
	fprintf(stderr, "microvm-sandbox: %s: %s\n", what, detail);
	return EXIT_SANDBOX;
}


static microvm *boot(const struct opts *o, int console, char *err, size_t errlen)
{
	microvm *vm;
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3; /* private to the VM: host sockets are per VM */
	if (microvm_create(&vm) < 0) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (microvm_set_vcpus(vm, o->cpus) < 0 || microvm_set_memory(vm, o->mem) < 0 ||
	    microvm_set_kernel(vm, o->kernel, "console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable") < 0 ||
	    microvm_set_initrd(vm, o->initrd) < 0 || microvm_set_console(vm, -1, console) < 0 ||
	    microvm_set_vsock(vm, &vs) < 0 || microvm_set_rng(vm, 1) < 0 || microvm_start(vm) < 0) {
		snprintf(err, errlen, "%s", microvm_last_error(vm));
		microvm_destroy(vm);
		return NULL;
	}
	return vm;
}

/* The VM to run in: restored from --snapshot if it exists, else booted
 * (and saved to --snapshot once its agent is up). */
static microvm *get_vm(const struct opts *o, int console, microvm_agent **agent, bool *restored)
{
	char err[512] = "";
	char state[4096];
	*restored = false;
	microvm *vm = NULL;
	if (o->snapshot) {
		snprintf(state, sizeof(state), "%s/state.dtb", o->snapshot);
		if (access(state, F_OK) == 0) {
			microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
			rc.console_out = console;
			if (microvm_restore(&vm, o->snapshot, &rc, err, sizeof(err)) < 0) {
				fail("restore", err);
				return NULL;
			}
			*restored = true;
		}
	}
	if (!vm && !(vm = boot(o, console, err, sizeof(err)))) {
		fail("boot", err);
		return NULL;
	}
	int r = microvm_agent_connect(vm, 120000, agent);
	if (r < 0) {
		fail("guest agent", r == -ETIMEDOUT ? "did not answer within 120 s" : strerror(-r));
		microvm_destroy(vm);
		return NULL;
	}
	if (*restored) {
		/* A clone must not continue its parent's random sequence. */
		uint8_t seed[64];
		if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed) ||
		    microvm_agent_reseed(*agent, seed, sizeof(seed)) < 0)
			fprintf(stderr, "microvm-sandbox: warning: could not reseed the guest RNG\n");
	} else if (o->snapshot) {
		/* Save the ready VM for the next runs. The agent connection is
		 * not part of a snapshot: reconnect after. */
		microvm_agent_close(*agent);
		*agent = NULL;
		if (microvm_pause(vm) < 0 || microvm_snapshot(vm, o->snapshot, 0) < 0)
			fprintf(stderr, "microvm-sandbox: warning: no snapshot saved: %s\n",
				microvm_last_error(vm));
		if (microvm_state(vm) == MICROVM_STATE_PAUSED && microvm_resume(vm) < 0) {
			fail("resume", microvm_last_error(vm));
			microvm_destroy(vm);
			return NULL;
		}
		if ((r = microvm_agent_connect(vm, 120000, agent)) < 0) {
			fail("guest agent", strerror(-r));
			microvm_destroy(vm);
			return NULL;
		}
	}
	return vm;
}

static void *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
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
	*len = (size_t)n;
	return b;
}

static int copy_in(microvm_agent *a, const char *spec)
{
	char host[4096];
	snprintf(host, sizeof(host), "%.*s", (int)(strchr(spec, ':') - spec), spec);
	const char *guest = strchr(spec, ':') + 1;
	size_t len;
	void *data = slurp(host, &len);
	if (!data)
		return fail(host, strerror(errno));
	int r = microvm_agent_put_file(a, guest, data, len, 0755, 0);
	free(data);
	return r < 0 ? fail(guest, microvm_agent_last_error(a)) : 0;
}

static int copy_out(microvm_agent *a, const char *spec)
{
	char guest[4096];
	snprintf(guest, sizeof(guest), "%.*s", (int)(strchr(spec, ':') - spec), spec);
	const char *host = strchr(spec, ':') + 1;
	void *data;
	size_t len;
	if (microvm_agent_get_file(a, guest, 0, &data, &len) < 0)
		return fail(guest, microvm_agent_last_error(a));
	int fd = open(host, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int ok = fd >= 0 && write(fd, data, len) == (ssize_t)len;
	if (fd >= 0)
		close(fd);
	free(data);
	return ok ? 0 : fail(host, strerror(errno));
}

static int on_output(void *opaque, int stream, const void *data, size_t len)
{
	(void)opaque;
	FILE *f = stream == MICROVM_EXEC_STDERR ? stderr : stdout;
	fwrite(data, 1, len, f);
	fflush(f);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	int first = parse(argc, argv, &o);
	if (first < 0)
		return EXIT_SANDBOX;
	double t0 = now_ms();
	/* The guest console (kernel log) goes to stderr with -v, else nowhere. */
	int console = o.verbose ? dup(STDERR_FILENO) : open("/dev/null", O_WRONLY | O_CLOEXEC);
	microvm_agent *a = NULL;
	bool restored;
	microvm *vm = get_vm(&o, console, &a, &restored);
	if (!vm)
		return EXIT_SANDBOX;
	double t1 = now_ms();
	int status = 0;
	for (int i = 0; i < o.nput && !status; i++)
		status = copy_in(a, o.puts[i]);
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	microvm_exec_result res = MICROVM_EXEC_RESULT_INIT;
	cfg.argv = (const char *const *)argv + first;
	o.envs[o.nenv] = NULL;
	cfg.envp = o.nenv ? o.envs : NULL;
	cfg.flags = o.nenv ? MICROVM_EXEC_MERGE_ENV : 0;
	cfg.cwd = o.cwd;
	cfg.stdin_fd = o.interactive ? STDIN_FILENO : -1;
	cfg.timeout_ms = o.timeout_s > 0 ? o.timeout_s * 1000 : 0;
	cfg.on_output = on_output;
	if (!status) {
		int r = microvm_agent_exec(a, &cfg, &res);
		if (r < 0)
			status = fail(argv[first], microvm_agent_last_error(a));
		else if (res.flags & MICROVM_EXEC_TIMED_OUT)
			status = 124;
		else
			status = res.signal ? 128 + res.signal : res.exit_code;
	}
	for (int i = 0; i < o.nget && (status == 0 || status < EXIT_SANDBOX); i++)
		if (copy_out(a, o.gets[i]))
			status = EXIT_SANDBOX;
	double t2 = now_ms();
	if (o.stats)
		fprintf(stderr, "microvm-sandbox: VM %s in %.1f ms, command took %.1f ms\n",
			restored ? "restored" : "booted", t1 - t0, t2 - t1);
	microvm_exec_result_free(&res);
	microvm_agent_close(a);
	microvm_destroy(vm);
	close(console);
	return status;
}
