/* The sandbox's VM: booted from a kernel plus a read-only root image (or an
 * initramfs), or restored from a template; ready once its agent answers. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "sandbox.h"

#define AGENT_WAIT_MS 120000
/* tsc=reliable: restored clones must not have their clocksource watchdog
 * mark the TSC unstable (see include/microvm.h, "Clocks"). */
#define CMDLINE_BASE "console=ttyS0 reboot=k panic=-1 pci=off quiet tsc=reliable"
#define CMDLINE_IMAGE \
	" root=/dev/vda ro rootfstype=ext4 init=/.microvm/agent microvm.overlay=tmpfs"

/* user: DHCP from passt configures eth0 before init (the kernel's IP
 * autoconfiguration; the agent turns /proc/net/pnp into /etc/resolv.conf). */
#define CMDLINE_DHCP " ip=dhcp"

static int add_net(microvm *vm, const struct sbx_opts *o)
{
	microvm_net_port ports[SBX_MAX_LIST];
	microvm_net_config n = MICROVM_NET_CONFIG_INIT;
	if (o->net == SBX_NET_NONE)
		return 0;
	if (o->net == SBX_NET_TAP) {
		n.backend = MICROVM_NET_BACKEND_TAP_NAME;
		n.tap_name = o->tap;
		return microvm_add_net(vm, &n) < 0 ? -1 : 0;
	}
	for (int i = 0; i < o->npublish; i++)
		ports[i] = (microvm_net_port){ .protocol = MICROVM_NET_TCP,
					       .host_port = o->publish[i].host_port,
					       .guest_port = o->publish[i].guest_port };
	n.backend = MICROVM_NET_BACKEND_USER;
	n.ports = ports;
	n.n_ports = (uint32_t)o->npublish;
	return microvm_add_net(vm, &n) < 0 ? -1 : 0;
}

static int configure(microvm *vm, const struct sbx_opts *o, const struct sbx_guest *g, int console)
{
	microvm_vsock_config vs = MICROVM_VSOCK_CONFIG_INIT;
	vs.guest_cid = 3; /* private to the VM: its host side is in-process only */
	char cmdline[512];
	snprintf(cmdline, sizeof(cmdline), "%s%s%s", CMDLINE_BASE, *g->image ? CMDLINE_IMAGE : "",
		 o->net == SBX_NET_USER ? CMDLINE_DHCP : "");
	if (microvm_set_vcpus(vm, o->cpus ? o->cpus : 1) < 0 ||
	    microvm_set_memory(vm, o->mem_mib ? o->mem_mib : 512) < 0 ||
	    microvm_set_kernel(vm, g->kernel, cmdline) < 0 ||
	    (*g->initrd && microvm_set_initrd(vm, g->initrd) < 0) ||
	    microvm_set_console(vm, -1, console) < 0 || microvm_set_vsock(vm, &vs) < 0 ||
	    microvm_set_rng(vm, 1) < 0 || add_net(vm, o) < 0 ||
	    /* The guest is hostile: the VM's threads get the seccomp filter. */
	    microvm_set_seccomp(vm, MICROVM_SECCOMP_ON) < 0)
		return -1;
	if (*g->image) {
		microvm_disk_config d = MICROVM_DISK_CONFIG_INIT;
		d.flags = MICROVM_DISK_READ_ONLY; /* shared base: nobody writes it */
		d.path = g->image;
		if (microvm_add_disk(vm, &d) < 0)
			return -1;
	}
	return 0;
}

/* A fresh sbx_vm with its console fd (opened now: not from inside --jail). */
void sbx_vm_init(const struct sbx_opts *o, struct sbx_vm *v)
{
	*v = (struct sbx_vm){ .verbose = o->verbose,
			      .console = o->verbose ? fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3) :
						      open("/dev/null", O_WRONLY | O_CLOEXEC) };
}

/* With -v, after a failure: the VM's report (paused first if it still
 * runs; it is about to be destroyed) on stderr, for a bug report. */
void sbx_vm_report(struct sbx_vm *v)
{
	if (!v->verbose || !v->vm)
		return;
	if (microvm_state(v->vm) == MICROVM_STATE_RUNNING)
		microvm_pause(v->vm);
	char buf[8192];
	int n = microvm_describe(v->vm, buf, sizeof(buf));
	if (n < 0)
		fprintf(stderr, "microvm-sandbox: no VM report: %s\n", microvm_last_error(v->vm));
	else
		fprintf(stderr, "microvm-sandbox: the VM:\n%s%s", buf,
			(size_t)n >= sizeof(buf) ? "...\n" : "");
}

/* When the guest stopped (@when: before its agent answered, or during the
 * run: copies and the command): why, on stderr, and SBX_EXIT_FAILED; 0 if it runs. */
int sbx_vm_stopped(struct sbx_vm *v, const char *when)
{
	microvm_exit ex = MICROVM_EXIT_INIT;
	if (microvm_state(v->vm) != MICROVM_STATE_STOPPED || microvm_wait(v->vm, 0, &ex) < 0)
		return 0;
	static const char *const why[] = { "stopped", "reset itself", "powered off", "crashed",
					   "stopped on an internal error", "was stopped" };
	bool guest_did = ex.reason == MICROVM_EXIT_RESET || ex.reason == MICROVM_EXIT_POWEROFF ||
			 ex.reason == MICROVM_EXIT_CRASH;
	fprintf(stderr, "microvm-sandbox: the guest %s %s (%s)%s\n",
		ex.reason < sizeof(why) / sizeof(why[0]) ? why[ex.reason] : "stopped", when,
		*ex.message ? ex.message : "no detail",
		guest_did ? "; not a guest of this project's images? -v shows its console" : "");
	return SBX_EXIT_FAILED;
}

static int connect_agent(struct sbx_vm *v, double t0)
{
	int r = microvm_agent_connect(v->vm, AGENT_WAIT_MS, &v->agent);
	if (r < 0 && sbx_vm_stopped(v, "before its agent answered")) {
		sbx_vm_report(v);
		return SBX_EXIT_FAILED;
	}
	if (r < 0) {
		sbx_vm_report(v);
		return sbx_fail("guest agent", r == -ETIMEDOUT ? "did not answer within 120 s" :
								 strerror(-r));
	}
	v->start_ms = sbx_now_ms() - t0;
	return 0;
}

/* A VM configured to boot @g: devices added, passt started, a TAP opened;
 * no thread yet. sbx_vm_boot() starts it. */
int sbx_vm_configure(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v)
{
	v->created_ms = sbx_now_ms();
	if (microvm_create(&v->vm) < 0)
		return sbx_fail("create", "out of memory");
	if (configure(v->vm, o, g, v->console) < 0)
		return sbx_fail("boot", microvm_last_error(v->vm));
	return 0;
}

int sbx_vm_boot(struct sbx_vm *v)
{
	if (microvm_start(v->vm) < 0)
		return sbx_fail("boot", microvm_last_error(v->vm));
	return connect_agent(v, v->created_ms);
}

/* A clone of the template @g->tpl; its root image at @g->image when the
 * template says where it is (sandbox.host), else where it was saved. */
int sbx_vm_restore(const struct sbx_opts *o, const struct sbx_guest *g, struct sbx_vm *v)
{
	v->restored = true;
	char err[512] = "";
	double t0 = sbx_now_ms();
	const char *disks[1] = { g->image };
	microvm_restore_config rc = MICROVM_RESTORE_CONFIG_INIT;
	rc.console_out = v->console;
	rc.seccomp = MICROVM_SECCOMP_ON;
	if (*g->image) {
		rc.n_disks = 1;
		rc.disk_paths = disks;
	}
	if (microvm_restore(&v->vm, g->tpl, &rc, err, sizeof(err)) < 0)
		return sbx_fail("restore", err);
	int r = connect_agent(v, t0);
	if (r)
		return r;
	/* A clone must not continue its template's random sequence. */
	uint8_t seed[64];
	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed) ||
	    microvm_agent_reseed(v->agent, seed, sizeof(seed)) < 0)
		return sbx_fail("restore", "could not reseed the guest's RNG");
	return 0;
}

/* Save the ready VM as a template in @dir (created if missing). The agent
 * connection is not part of a snapshot: it is closed first. */
int sbx_vm_save(struct sbx_vm *v, const char *dir)
{
	microvm_agent_close(v->agent);
	v->agent = NULL;
	if (microvm_pause(v->vm) < 0 || microvm_snapshot(v->vm, dir, 0) < 0)
		return sbx_fail("snapshot", microvm_last_error(v->vm));
	return 0;
}

void sbx_vm_destroy(struct sbx_vm *v)
{
	microvm_agent_close(v->agent);
	microvm_destroy(v->vm);
	if (v->console >= 0)
		close(v->console);
	*v = (struct sbx_vm){ .console = -1 };
}
