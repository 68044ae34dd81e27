/* The command in the guest: its argv, environment, user, directory and
 * stdin from the options and the image's configuration; files copied in and
 * out around it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"

#define COPY_MAX (1ull << 30) /* files are copied whole, through memory */

/* The whole of the regular file @fd, from its start. */
static void *slurp(int fd, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (unsigned long long)st.st_size > COPY_MAX) {
		errno = EINVAL;
		return NULL;
	}
	char *b = malloc((size_t)st.st_size + 1);
	size_t got = 0;
	ssize_t n = 1;
	while (b && got < (size_t)st.st_size &&
	       (n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got)) > 0)
		got += (size_t)n;
	if (!b || got != (size_t)st.st_size) {
		free(b);
		errno = b ? EIO : ENOMEM;
		return NULL;
	}
	*len = got;
	return b;
}

/* "A:B" -> @a = "A" (copied), returns "B". */
static const char *split_spec(const char *spec, char *a, size_t alen)
{
	const char *colon = strchr(spec, ':');
	snprintf(a, alen, "%.*s", (int)(colon - spec), spec);
	return colon + 1;
}

/* @fd: the host file, opened by sbx_files_open(). */
int sbx_copy_in(microvm_agent *a, const char *spec, int fd)
{
	char host[4096];
	const char *guest = split_spec(spec, host, sizeof(host));
	size_t len;
	void *data = slurp(fd, &len);
	if (!data)
		return sbx_fail(host, strerror(errno));
	struct stat st;
	mode_t mode = fstat(fd, &st) == 0 ? st.st_mode & 07777 : 0644;
	int r = microvm_agent_put_file(a, guest, data, len, mode, 0);
	free(data);
	return r < 0 ? sbx_fail(guest, microvm_agent_last_error(a)) : 0;
}

static int write_whole(int fd, const void *data, size_t len)
{
	size_t done = 0;
	ssize_t n = 1;
	while (done < len && (n = pwrite(fd, (const char *)data + done, len - done,
					 (off_t)done)) > 0)
		done += (size_t)n;
	if (done < len)
		return n < 0 ? errno : EIO;
	return ftruncate(fd, (off_t)len) < 0 ? errno : 0;
}

/* @fd: the destination, opened (and @created) by sbx_files_open(); it is
 * replaced by the guest file's contents, or removed again if it was
 * created for this copy and the copy failed. */
int sbx_copy_out(microvm_agent *a, const char *spec, int fd, bool created)
{
	char guest[4096];
	const char *host = split_spec(spec, guest, sizeof(guest));
	void *data;
	size_t len;
	int e = microvm_agent_get_file(a, guest, 0, &data, &len) < 0 ? -1 : 0;
	if (e < 0 && created)
		unlink(host); /* fails harmlessly inside --jail */
	if (e < 0)
		return sbx_fail(guest, microvm_agent_last_error(a));
	e = write_whole(fd, data, len);
	free(data);
	return e ? sbx_fail(host, strerror(e)) : 0;
}

static int on_output(void *opaque, int stream, const void *data, size_t len)
{
	(void)opaque;
	int fd = stream == MICROVM_EXEC_STDERR ? STDERR_FILENO : STDOUT_FILENO;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, (const char *)data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0; /* our stdout/stderr is gone: drop, as a pipe reader would */
		off += (size_t)n;
	}
	return 0;
}

static size_t count(char *const *l)
{
	size_t n = 0;
	while (l && l[n])
		n++;
	return n;
}

/* The image's entrypoint followed by the given command, or by the image's
 * cmd when none was given. malloc'd, NULL-terminated; NULL if empty. */
static const char **build_argv(const struct sbx_opts *o, const struct sbx_procconf *pc)
{
	size_t ne = count(pc->entrypoint);
	char *const *rest = o->ncmd ? o->cmd : pc->cmd;
	size_t nr = o->ncmd ? (size_t)o->ncmd : count(pc->cmd);
	if (ne + nr == 0)
		return NULL;
	const char **v = calloc(ne + nr + 1, sizeof(*v));
	for (size_t i = 0; v && i < ne + nr; i++)
		v[i] = i < ne ? pc->entrypoint[i] : rest[i - ne];
	return v;
}

static bool same_name(const char *a, const char *b)
{
	size_t la = strcspn(a, "="), lb = strcspn(b, "=");
	return la == lb && !memcmp(a, b, la);
}

/* The image's environment with --env entries replacing same-named ones.
 * NULL when the image has none (the agent's default is then merged). */
static const char **build_env(const struct sbx_opts *o, const struct sbx_procconf *pc)
{
	size_t ni = count(pc->env), k = 0;
	if (!ni)
		return NULL;
	const char **v = calloc(ni + (size_t)o->nenv + 1, sizeof(*v));
	for (size_t i = 0; v && i < ni; i++) {
		bool replaced = false;
		for (int j = 0; j < o->nenv && !replaced; j++)
			replaced = same_name(pc->env[i], o->env[j]);
		if (!replaced)
			v[k++] = pc->env[i];
	}
	for (int j = 0; v && j < o->nenv; j++)
		v[k++] = o->env[j];
	return v;
}

static bool pass_stdin(const struct sbx_opts *o)
{
	if (fcntl(STDIN_FILENO, F_GETFD) < 0)
		return false;
	return o->stdin_mode == 1 || (o->stdin_mode == -1 && !isatty(STDIN_FILENO));
}

/* A failed start as the tool's exit status: 127 not found, 126 not
 * executable, 125 anything else (directory, user, the sandbox). */
static int start_failure(microvm_agent *a, int r, const char *prog)
{
	const char *why = microvm_agent_last_error(a);
	if (!strncmp(why, "agent: ", 7))
		why += 7; /* what the agent said */
	bool at_exec = !strncmp(why, "exec ", 5);
	fprintf(stderr, "microvm-sandbox: %s: %s\n", at_exec ? prog : "cannot start", why);
	if (at_exec && r == -ENOENT)
		return SBX_EXIT_NOTFOUND;
	if (at_exec && (r == -EACCES || r == -ENOEXEC || r == -EPERM || r == -EISDIR))
		return SBX_EXIT_NOEXEC;
	return SBX_EXIT_FAILED;
}

static void fill_config(const struct sbx_opts *o, const struct sbx_procconf *pc,
			const char **argv, const char **env, microvm_exec_config *cfg)
{
	cfg->argv = argv;
	cfg->envp = env;
	cfg->flags = env || !o->nenv ? 0 : MICROVM_EXEC_MERGE_ENV;
	cfg->cwd = o->workdir ? o->workdir : pc->cwd;
	cfg->user = o->user ? o->user : pc->user;
	cfg->stdin_fd = pass_stdin(o) ? STDIN_FILENO : -1;
	cfg->timeout_ms = o->timeout_s > 0 ? (int)(o->timeout_s * 1000 + 0.5) : 0;
	if (o->timeout_s > 0 && cfg->timeout_ms < 1)
		cfg->timeout_ms = 1;
	cfg->on_output = on_output;
}

void sbx_run_command(const struct sbx_opts *o, const struct sbx_procconf *pc,
		     microvm_agent *a, struct sbx_result *res)
{
	const char **argv = build_argv(o, pc);
	const char **env = build_env(o, pc);
	if (!argv) {
		res->status = sbx_usage_error("no command given (and the image has none)");
		free(env);
		return;
	}
	const char *envl[SBX_MAX_LIST + 1];
	memcpy(envl, o->env, sizeof(o->env[0]) * (size_t)o->nenv);
	envl[o->nenv] = NULL;
	microvm_exec_config cfg = MICROVM_EXEC_CONFIG_INIT;
	fill_config(o, pc, argv, env, &cfg);
	if (!env && o->nenv)
		cfg.envp = envl;
	microvm_exec_result er = MICROVM_EXEC_RESULT_INIT;
	double t0 = sbx_now_ms();
	int r = microvm_agent_exec(a, &cfg, &er);
	res->command_ms = sbx_now_ms() - t0;
	if (r < 0) {
		res->status = start_failure(a, r, argv[0]);
	} else {
		res->exit_code = er.exit_code;
		res->signal = er.signal;
		res->timed_out = er.flags & MICROVM_EXEC_TIMED_OUT;
		res->max_rss_kib = er.max_rss_kib;
		res->status = res->timed_out ? SBX_EXIT_TIMEOUT :
			      er.signal	     ? 128 + er.signal :
						er.exit_code;
	}
	microvm_exec_result_free(&er);
	free(argv);
	free(env);
}
