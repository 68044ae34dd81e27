/* Helpers shared by the Linux-guest test programs (run by run.sh). */
#ifndef LINUX_TEST_H
#define LINUX_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <microvm.h>
#include <microvm_agent.h>

/* Boots take seconds even emulated; a guest silent this long is stuck. */
#define BOOT_TIMEOUT_MS (4 * 60 * 1000)
/* Exit status for "the guest got stuck": under the emulated machine that is
 * usually the emulator's own nested-SVM trouble, so run.sh retries it (a
 * deterministic hang still fails every attempt). */
#define EXIT_GUEST_STUCK 124
#define OUT_MAX (4 << 20)

static inline double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static inline const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		fail_msg("%s is not set (run this through tests/linux/run.sh)", name);
	return v;
}

static inline char *read_all(int fd)
{
	char *buf = malloc(OUT_MAX + 1);
	assert_non_null(buf);
	ssize_t n = pread(fd, buf, OUT_MAX, 0);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

/* Print the last @lines lines of a guest console under a heading: the
 * failure message after it stays on screen and in truncated CI logs. */
static inline void print_console_tail(const char *what, const char *text, int lines)
{
	const char *t = text + strlen(text);
	int n = 0;
	while (t > text && n <= lines)
		if (*--t == '\n')
			n++;
	if (t > text)
		t++;
	fprintf(stderr, "---- %s: last %d console lines ----\n%s\n----\n", what, lines, t);
}

static inline void copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(in >= 0 && out >= 0);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	close(out);
}

/* Contents of @file inside the ext4 image @img, read on the host with
 * debugfs (e2fsprogs; no mount, no root needed). */
static inline char *ext4_cat(const char *img, const char *file)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "debugfs -R 'cat %s' '%s' 2>/dev/null", file, img);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char *buf = calloc(1, 4096);
	assert_non_null(buf);
	size_t n = fread(buf, 1, 4095, p);
	buf[n] = 0;
	pclose(p);
	return buf;
}

/*
 * Print this process's vCPU threads ("vcpu<N>"): state, the system call
 * each is in, kernel wait channel. True if one of them waits in a system
 * call other than ioctl (KVM_RUN), i.e. in the library, not in the guest.
 */
static inline bool vcpu_threads_blocked_in_library(void)
{
	DIR *d = opendir("/proc/self/task");
	bool blocked = false;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], comm[32] = "", sys[64] = "", wchan[64] = "", stat[512] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f) || strncmp(comm, "vcpu", 4) != 0) {
			fclose(f);
			continue;
		}
		fclose(f);
		comm[strcspn(comm, "\n")] = 0;
		const char *files[] = { "syscall", "wchan", "stat" };
		char *bufs[] = { sys, wchan, stat };
		size_t lens[] = { sizeof(sys), sizeof(wchan), sizeof(stat) };
		for (int i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "/proc/self/task/%s/%s", e->d_name, files[i]);
			if ((f = fopen(path, "r"))) {
				if (!fgets(bufs[i], (int)lens[i], f))
					bufs[i][0] = 0;
				fclose(f);
			}
			bufs[i][strcspn(bufs[i], "\n")] = 0;
		}
		const char *state = strrchr(stat, ')');
		fprintf(stderr, "  thread %s (%s): state %c, system call %.24s, waits in %s\n",
			e->d_name, comm, state && state[1] ? state[2] : '?', sys,
			*wchan && strcmp(wchan, "0") ? wchan : "-");
		/* "running", or "16 ..." (ioctl: KVM_RUN) is in or entering the
		 * guest; any other number is a wait of the library's own. */
		if (sys[0] >= '0' && sys[0] <= '9' && strncmp(sys, "16 ", 3) != 0)
			blocked = true;
	}
	if (d)
		closedir(d);
	return blocked;
}

/*
 * A guest whose kernel reports an RCU stall twice: one of its vCPUs stopped
 * executing for over a minute. Under the emulated machine (QEMU 7.2 TCG,
 * nested SVM) that is the emulator's doing: in about 1 in 40 two-vCPU
 * boots a vCPU stops for good at one RIP with a CR3 beyond the end of guest
 * RAM, a value the guest never loads; its RCU reports the stall ~21 s
 * later and again every ~63 s. (One report alone can be a slow, starved
 * emulator that recovers.) If every vCPU thread is in KVM_RUN, the process
 * exits with EXIT_GUEST_STUCK, which run.sh retries (a real hang still
 * fails every attempt); a vCPU thread blocked in the library is a failure.
 */
static inline void exit_if_guest_stalled(const char *what, const char *console)
{
	int reports = 0;
	for (const char *p = console; (p = strstr(p, "rcu: INFO: rcu_sched ")); p++)
		reports += strncmp(p + 21, "detected stalls", 15) == 0 ||
			   strncmp(p + 21, "self-detected stall", 19) == 0;
	if (reports < 2)
		return;
	print_console_tail(what, console, 40);
	fprintf(stderr, "%s: the guest kernel reports a stalled vCPU; the vCPU threads:\n", what);
	if (vcpu_threads_blocked_in_library())
		fail_msg("%s: a vCPU thread is blocked in the library while the guest stalls", what);
	fprintf(stderr, "GUEST-STUCK: %s: a stalled vCPU, every vCPU thread in KVM_RUN\n", what);
	fflush(NULL);
	_exit(EXIT_GUEST_STUCK);
}

/* The VM's report (microvm_describe; paused for it, then resumed) on
 * stderr, for the log of a failure. */
static inline void print_vm_report(microvm *vm, const char *what)
{
	bool was_running = microvm_state(vm) == MICROVM_STATE_RUNNING;
	if (was_running)
		microvm_pause(vm);
	char buf[8192];
	if (microvm_describe(vm, buf, sizeof(buf)) >= 0)
		fprintf(stderr, "%s: the VM:\n%s", what, buf);
	else
		fprintf(stderr, "%s: no VM report: %s\n", what, microvm_last_error(vm));
	if (was_running)
		microvm_resume(vm);
}

/*
 * microvm_agent_connect() for up to @timeout_ms, in 15 s slices, checking
 * the guest console (@console_fd, a memfd) between them for a stall
 * (above); after the last, the VM's report. Returns what
 * microvm_agent_connect() returned last.
 */
static inline int agent_connect_watching(microvm *vm, int console_fd, const char *what,
					 int timeout_ms, microvm_agent **out)
{
	double end = now_ms() + timeout_ms;
	for (;;) {
		double left = end - now_ms();
		int slice = left < 15000 ? (int)(left > 0 ? left : 0) : 15000;
		int r = microvm_agent_connect(vm, slice, out);
		if (r == -ETIMEDOUT && now_ms() >= end)
			print_vm_report(vm, what);
		if (r != -ETIMEDOUT || now_ms() >= end)
			return r;
		char *t = read_all(console_fd);
		exit_if_guest_stalled(what, t);
		free(t);
	}
}

#define BASE_CMDLINE "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux"

#endif
