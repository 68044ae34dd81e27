/*
 * microvm-sandbox: run one command in a throw-away microVM (see docs/sandbox.md).
 * One header for the tool's parts: options, images, the VM, the command.
 */
#ifndef MICROVM_SANDBOX_H
#define MICROVM_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <microvm_agent.h>

/* Exit statuses of the tool itself (the command's own otherwise, 128+N for
 * signal N). */
#define SBX_EXIT_USAGE 2      /* bad options, missing image/kernel/template */
#define SBX_EXIT_TIMEOUT 124  /* --timeout ran out; the command was killed */
#define SBX_EXIT_FAILED 125   /* the sandbox failed (boot, restore, agent, copy) */
#define SBX_EXIT_NOEXEC 126   /* the command could not be executed */
#define SBX_EXIT_NOTFOUND 127 /* the command was not found */

#define SBX_MAX_LIST 64

enum sbx_mode { SBX_RUN, SBX_PREPARE };
enum sbx_net { SBX_NET_NONE, SBX_NET_USER, SBX_NET_TAP };

/* --publish HOSTPORT:GUESTPORT (TCP) */
struct sbx_publish {
	uint16_t host_port, guest_port;
};

struct sbx_opts {
	enum sbx_mode mode;
	const char *image;    /* "debian", a path, "oci:DIR[:TAG]"; NULL with initrd */
	const char *kernel;   /* NULL = the project's default guest kernel */
	const char *initrd;   /* boot this initramfs instead of an image */
	const char *from;     /* run: restore this template */
	const char *snapshot; /* prepare: save the template here */
	const char *workdir, *user, *json;
	uint32_t cpus;
	uint64_t mem_mib;
	double timeout_s;
	int stdin_mode; /* 1 pass stdin, 0 not, -1 = when it is not a terminal */
	bool verbose;
	enum sbx_net net;   /* --net */
	const char *tap;    /* --net tap:NAME */
	struct sbx_publish publish[SBX_MAX_LIST];
	int npublish;
	const char *env[SBX_MAX_LIST], *copy_in[SBX_MAX_LIST], *copy_out[SBX_MAX_LIST];
	int nenv, ncopy_in, ncopy_out;
	char *const *cmd; /* after "--"; NULL-terminated; may be empty */
	int ncmd;
	bool jail;             /* --jail: namespaces and an empty root (jail.c) */
	const char *host_user; /* --host-user USER[:GROUP] (root only; privs.c) */
};

/* An image's process configuration (OCI: Entrypoint, Cmd, Env, WorkingDir,
 * User), from the sidecar build-oci.sh writes. Strings malloc'd. */
struct sbx_procconf {
	char **entrypoint, **cmd, **env; /* NULL-terminated arrays, may be NULL */
	char *cwd, *user;
};

/* What to boot: a kernel plus either a root image or an initramfs. */
struct sbx_guest {
	char kernel[4096];
	char image[4096];  /* "" with an initramfs */
	char initrd[4096]; /* "" with an image */
	char config[4096]; /* the image's process-config sidecar, "" if none */
	struct sbx_procconf pc;
	/* --from: the template directory (absolute) and what it needs from
	 * the host (template.c; its image path is in image[]). */
	char tpl[4096];
	bool tpl_known;
	enum sbx_net tpl_net;
};

/* options.c: parse argv. Returns 0, or SBX_EXIT_USAGE after printing why
 * (or 0 with *done set for --help). */
int sbx_parse(int argc, char **argv, struct sbx_opts *o, bool *done);
void sbx_usage(FILE *f);
int sbx_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* image.c */
int sbx_resolve_guest(const struct sbx_opts *o, struct sbx_guest *g);
int sbx_procconf_load(const char *path, struct sbx_procconf *pc);
void sbx_procconf_free(struct sbx_procconf *pc);
/* template dir files: the sidecar copied at prepare time */
int sbx_template_save_config(const struct sbx_guest *g, const char *dir);

/* template.c: DIR/sandbox.host, what a template needs from the host (its
 * image and network), written by prepare, read by run --from. */
int sbx_template_save_host(const struct sbx_opts *o, const struct sbx_guest *g, const char *dir);
int sbx_template_load_host(const char *dir, struct sbx_guest *g);

/* hostfiles.c: the host files a run reads or writes once its VM exists
 * (--copy-in sources, --copy-out destinations, the --json report), opened
 * before anything else; every other inherited fd is closed. */
struct sbx_files {
	int in[SBX_MAX_LIST], out[SBX_MAX_LIST];
	bool created[SBX_MAX_LIST]; /* out[i] did not exist before */
	FILE *json;                 /* NULL without --json */
};
int sbx_files_open(const struct sbx_opts *o, struct sbx_files *f);
void sbx_files_close(struct sbx_files *f);

/* privs.c: the host user (--host-user) and dropping what the VMM does not
 * need: capabilities, new privileges, core dumps, fds beyond its limit. */
struct sbx_hostuser {
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	int ngroups;
};
int sbx_hostuser_resolve(const char *spec, struct sbx_hostuser *u);
int sbx_hostuser_become(const char *spec, const struct sbx_hostuser *u);
int sbx_check_readable(const char *const *paths, int n, const char *why);
int sbx_lockdown(uint64_t keep_caps);
uint64_t sbx_restore_caps(const struct sbx_guest *g);

/* jail.c: --jail's first namespaces. sbx_jail_fork() unshares a user
 * namespace (unless root) and a PID namespace and forks: it returns 0 in
 * the child (PID 1 there, the VMM), the child's pid in the parent (which
 * then only calls sbx_jail_wait() and exits with what it returns), -1 after
 * saying why. jailfs.c: sbx_jail_enter() gives the child its own mount,
 * network, IPC, UTS and cgroup namespaces and, as its root, an empty
 * read-only tmpfs holding only @paths (absolute, bind-mounted read-only at
 * the same paths). */
pid_t sbx_jail_fork(void);
int sbx_jail_wait(pid_t child);
int sbx_jail_enter(const char *const *paths, int n);

/* guestvm.c: a VM whose agent answers. */
struct sbx_vm {
	microvm *vm;
	microvm_agent *agent;
	bool restored;
	bool verbose; /* -v: the guest's console on stderr, and the VM's report
		       * (microvm_describe) when it fails a run */
	int console;
	double start_ms;   /* create/restore -> agent ready */
	double created_ms; /* when sbx_vm_configure() began */
};
void sbx_vm_init(const struct sbx_opts *o, struct sbx_vm *v);
int sbx_vm_configure(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v);
int sbx_vm_boot(struct sbx_vm *v);
int sbx_vm_restore(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v);
int sbx_vm_save(struct sbx_vm *v, const char *dir);
int sbx_vm_stopped(struct sbx_vm *v, const char *when);
void sbx_vm_report(struct sbx_vm *v);
void sbx_vm_destroy(struct sbx_vm *v);

/* command.c */
struct sbx_result {
	int status; /* the tool's exit status */
	int exit_code, signal;
	bool timed_out;
	double command_ms;
	uint64_t max_rss_kib;
};
int sbx_copy_in(microvm_agent *a, const char *spec, int fd);
int sbx_copy_out(microvm_agent *a, const char *spec, int fd, bool created);
void sbx_run_command(const struct sbx_opts *o, const struct sbx_procconf *pc,
		     microvm_agent *a, struct sbx_result *res);

/* util.c */
double sbx_now_ms(void);
int sbx_fail(const char *what, const char *detail);

#endif
