/* Finding what to boot: the kernel, the root image (the project's Debian
 * image, an ext4 file, or an OCI layout converted to one) and the image's
 * process configuration. The images are built (and cached) by the scripts in
 * guest/, which print the result's path as their last line of output. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

/* Where the guest scripts and the agent are: the source/build tree this
 * binary was built in, else the installed libexec directory. */
static const char *guest_dir(void)
{
	static char d[4096];
	snprintf(d, sizeof(d), "%s/guest", MICROVM_SANDBOX_SRCDIR);
	if (access(d, X_OK) == 0)
		return d;
	snprintf(d, sizeof(d), "%s/guest", MICROVM_SANDBOX_LIBEXECDIR);
	return d;
}

static const char *agent_path(void)
{
	static char p[4096];
	snprintf(p, sizeof(p), "%s/guest/agent/microvm-agent", MICROVM_SANDBOX_BINDIR);
	if (access(p, X_OK) == 0)
		return p;
	snprintf(p, sizeof(p), "%s/microvm-agent", MICROVM_SANDBOX_LIBEXECDIR);
	return p;
}

/* Run @argv with its stderr (progress) on ours; the last line it printed on
 * stdout into @out. 0, or SBX_EXIT_FAILED after saying why. */
static int run_script(char *const *argv, char *out, size_t outlen)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return sbx_fail("pipe", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		execv(argv[0], argv);
		fprintf(stderr, "microvm-sandbox: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	char buf[8192], line[4096] = "";
	size_t have = 0;
	ssize_t n;
	while ((n = read(p[0], buf + have, sizeof(buf) - 1 - have)) > 0) {
		have += (size_t)n;
		buf[have] = 0;
		char *nl;
		while ((nl = strchr(buf, '\n'))) {
			*nl = 0;
			if (*buf)
				snprintf(line, sizeof(line), "%.4095s", buf);
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have + 1);
		}
		if (have == sizeof(buf) - 1)
			have = 0; /* an overlong line: not a path */
	}
	close(p[0]);
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) || !*line)
		return sbx_fail(argv[0], "failed (see its messages above)");
	snprintf(out, outlen, "%s", line);
	return 0;
}

static int resolve_kernel(const struct sbx_opts *o, struct sbx_guest *g)
{
	const char *k = o->kernel ? o->kernel : getenv("MICROVM_KERNEL");
	if (k && *k) {
		if (access(k, R_OK) < 0)
			return sbx_usage_error("kernel %s: %s", k, strerror(errno));
		snprintf(g->kernel, sizeof(g->kernel), "%s", k);
		return 0;
	}
	char script[4200], dir[4096];
	snprintf(script, sizeof(script), "%s/kernel/build.sh", guest_dir());
	char *argv[] = { script, "guest", NULL };
	int r = run_script(argv, dir, sizeof(dir));
	if (r == 0 && snprintf(g->kernel, sizeof(g->kernel), "%s/bzImage", dir) >= (int)sizeof(g->kernel))
		return sbx_fail("kernel", "path too long");
	return r;
}

/* "oci:DIR[:TAG]": DIR must be a directory (the layout). */
static int resolve_oci(const char *spec, struct sbx_guest *g)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", spec);
	struct stat st;
	char *colon = strrchr(dir, ':');
	if (stat(dir, &st) < 0 && colon) {
		*colon = 0;
		if (stat(dir, &st) < 0)
			*colon = ':';
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return sbx_usage_error("--image oci:%s: not an OCI image layout directory", spec);
	char script[4200];
	snprintf(script, sizeof(script), "%s/rootfs/build-oci.sh", guest_dir());
	char *argv[] = { script, (char *)spec, "--agent", (char *)agent_path(), NULL };
	int r = run_script(argv, g->image, sizeof(g->image));
	if (r == 0)
		snprintf(g->config, sizeof(g->config), "%.4000s.config", g->image);
	return r;
}

static int resolve_image(const char *spec, struct sbx_guest *g)
{
	if (!strncmp(spec, "oci:", 4))
		return resolve_oci(spec + 4, g);
	if (!strcmp(spec, "debian")) {
		const char *env = getenv("MICROVM_DEBIAN_IMAGE");
		if (env && *env) {
			spec = env;
		} else {
			char script[4200];
			snprintf(script, sizeof(script), "%s/rootfs/build-debian.sh", guest_dir());
			char *argv[] = { script, "--agent", (char *)agent_path(), NULL };
			int r = run_script(argv, g->image, sizeof(g->image));
			if (r && geteuid() != 0)
				fputs("microvm-sandbox: building the Debian image needs root once; as "
				      "another user, point MICROVM_DEBIAN_IMAGE (or --image) at an "
				      "image root built (docs/security.md)\n", stderr);
			return r;
		}
	}
	struct stat st;
	if (stat(spec, &st) < 0 || !S_ISREG(st.st_mode))
		return sbx_usage_error("--image %s: %s", spec,
				       errno && access(spec, F_OK) < 0 ? strerror(errno) :
									  "not a regular file");
	snprintf(g->image, sizeof(g->image), "%s", spec);
	char side[4200];
	snprintf(side, sizeof(side), "%s.config", spec);
	if (access(side, R_OK) == 0)
		snprintf(g->config, sizeof(g->config), "%.4095s", side);
	return 0;
}

/* @p (a buffer of 4096) as an absolute path without symlinks: the VM, a
 * template and --jail's root refer to the files by these names. */
static int canonical(char *p)
{
	char abs[PATH_MAX];
	if (!*p)
		return 0;
	if (!realpath(p, abs))
		return sbx_usage_error("%s: %s", p, strerror(errno));
	snprintf(p, 4096, "%s", abs);
	return 0;
}

int sbx_resolve_guest(const struct sbx_opts *o, struct sbx_guest *g)
{
	memset(g, 0, sizeof(*g));
	int r;
	if (o->initrd) {
		if (access(o->initrd, R_OK) < 0)
			return sbx_usage_error("--initrd %s: %s", o->initrd, strerror(errno));
		snprintf(g->initrd, sizeof(g->initrd), "%s", o->initrd);
	} else if ((r = resolve_image(o->image ? o->image : "debian", g))) {
		return r;
	}
	if ((r = resolve_kernel(o, g)) || (r = canonical(g->kernel)) || (r = canonical(g->image)) ||
	    (r = canonical(g->initrd)))
		return r;
	if (*g->config && sbx_procconf_load(g->config, &g->pc) < 0)
		return sbx_fail(g->config, "unreadable image configuration");
	return 0;
}
