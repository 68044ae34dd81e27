/* Helpers for the tiny-guest tests: they need a usable /dev/kvm. */
#ifndef KVM_TEST_H
#define KVM_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <microvm.h>

static inline const char *payload(const char *name)
{
	static __thread char path[512];
	snprintf(path, sizeof(path), "%s/%s.elf", TINY_DIR, name);
	return path;
}

/* A memfd that collects console output. */
static inline int console_fd(void)
{
	int fd = memfd_create("console", MFD_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* Console output so far (static buffer, NUL-terminated). */
static inline const char *console_text(int fd)
{
	static __thread char buf[65536];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

static inline double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Wait (up to @timeout_ms) until the console contains @needle. */
static inline int console_wait_for(int fd, const char *needle, int timeout_ms)
{
	double end = now_ms() + timeout_ms;
	while (!strstr(console_text(fd), needle)) {
		if (now_ms() > end)
			return -1;
		usleep(2000);
	}
	return 0;
}

/* Create a VM for a tiny payload; asserts on failure. */
static inline microvm *tiny_vm(const char *name, const char *cmdline, uint32_t vcpus, int out_fd)
{
	microvm *vm = NULL;
	assert_int_equal(microvm_create(&vm), 0);
	assert_int_equal(microvm_set_vcpus(vm, vcpus), 0);
	assert_int_equal(microvm_set_memory(vm, 16), 0);
	assert_int_equal(microvm_set_kernel(vm, payload(name), cmdline), 0);
	assert_int_equal(microvm_set_console(vm, -1, out_fd), 0);
	return vm;
}

static inline void start_ok(microvm *vm)
{
	int r = microvm_start(vm);
	if (r != 0)
		fail_msg("microvm_start: %d %s", r, microvm_last_error(vm));
}

/* Long enough for the slowest (emulated) /dev/kvm; never a pass/fail time. */
#define GUEST_TIMEOUT_MS 60000

/* Threads in this process (/proc/self/task entries). */
/* The process's open fds. */
/* The library's process-wide event threads (kept once made: 2 fds each). */
static inline int kvm_test_event_threads(void)
{
	microvm_runtime_counters c = MICROVM_RUNTIME_COUNTERS_INIT;
	assert_int_equal(microvm_runtime_stats(&c), 0);
	return (int)c.event_threads;
}

/* Open fds of the process, without the runtime's event threads' and
 * boot-image cache's (which stay once made: see "Process-wide runtime" in
 * microvm.h). */
static inline int kvm_test_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	microvm_runtime_counters c = MICROVM_RUNTIME_COUNTERS_INIT;
	assert_int_equal(microvm_runtime_stats(&c), 0);
	/* minus the DIR's own fd and the boot-image cache's (1 per file) */
	return n - 1 - 2 * kvm_test_event_threads() - (int)c.image_cache_files;
}

/* The process's resident set, KiB (-1 if unreadable). */
static inline long kvm_test_rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* KVM's PIT worker threads of this process's VMs ("kvm-pit/<pid>": host
 * kernel threads, one per VM with a PIT, not in /proc/self/task). */
static inline int kvm_test_pit_threads(void)
{
	char want[32], path[300], comm[64];
	snprintf(want, sizeof(want), "kvm-pit/%d\n", (int)getpid());
	DIR *d = opendir("/proc");
	assert_non_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && strcmp(comm, want) == 0)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

static inline int thread_count(void)
{
	int n = 0;
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

static inline void *kvm_test_noop_thread(void *arg)
{
	return arg;
}

/* Threads of the process before any VM existed: 1, or 2 under
 * ThreadSanitizer (its background thread, started with the first
 * pthread_create: one is created and joined first). Captured by the first
 * call, which require_kvm() makes at group setup. */
static inline int base_threads(void)
{
	static int base;
	if (!base) {
		pthread_t t;
		if (pthread_create(&t, NULL, kvm_test_noop_thread, NULL) == 0)
			pthread_join(t, NULL);
		base = thread_count();
	}
	return base;
}

/* Threads of the process with no VM running: base_threads() plus the
 * runtime's event threads (kept once made). */
static inline int idle_threads(void)
{
	return base_threads() + kvm_test_event_threads();
}

/* Fail (under CI) or skip when there is no usable /dev/kvm. */
static inline int require_kvm(void **state)
{
	(void)state;
	base_threads();
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (getenv("CI")) {
		fprintf(stderr, "FATAL: /dev/kvm is not usable (%s) and CI is set\n",
			strerror(errno));
		return -1; /* group setup failure fails every test */
	}
	fprintf(stderr, "SKIP: /dev/kvm is not usable: %s\n", strerror(errno));
	return 0;
}

/*
 * microvm_destroy() leaves the kernel's VM teardown (~16 ms) to a detached
 * thread. Wait for those threads to finish before the process exits: a
 * LeakSanitizer stop-the-world at exit can deadlock with a teardown in
 * flight (the kernel waits for a KVM worker task that ptrace has stopped).
 */
static inline int wait_teardown_done(void **state)
{
	(void)state;
	if (microvm_teardown_wait(30000) < 0)
		return -1;
	for (int i = 0; i < 3000 && thread_count() > idle_threads(); i++)
		usleep(10000);
	return thread_count() <= idle_threads() ? 0 : -1;
}

/* Without a usable /dev/kvm: fail under CI (CI=true), else skip. */
#define SKIP_WITHOUT_KVM()                                                      \
	do {                                                                    \
		if (access("/dev/kvm", R_OK | W_OK) != 0) {                     \
			if (getenv("CI"))                                       \
				fail_msg("/dev/kvm is not usable and CI is set"); \
			skip();                                                 \
		}                                                               \
	} while (0)

#endif
