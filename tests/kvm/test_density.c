/*
 * Density: N VMs at once in one process (default 8000; MICROVM_DENSITY_VMS
 * sets N), 1 vCPU and 16 MiB each, under a 20,000-fd limit (so at most 2
 * library fds per VM). Each runs the "idle" payload: prints one line to
 * one shared output pipe, then sleeps in hlt until console input. A sample
 * of 100 has its own input pipe and must answer a line while the rest
 * idle. Then all are destroyed and fds, threads and RSS must return to
 * the baseline (the runtime's event threads, kept once made, aside).
 * Prints fds, threads and host RSS per VM beyond guest pages, and the
 * answer latencies (reported, never asserted: CI machines vary). The VMs
 * have no PIT (microvm_set_pit: no KVM PIT worker thread per VM, the
 * density setting); MICROVM_DENSITY_PIT=1 gives them one.
 */
#include "kvm_test.h"

#include <dirent.h>
#include <malloc.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "vm.h"

#define FD_LIMIT 20000
#define SAMPLE 100

struct density {
	int n;
	microvm **vms;
	int out[2];           /* the shared output pipe */
	int in[SAMPLE][2];    /* the sample's input pipes */
	char buf[1 << 16];    /* unconsumed shared output */
	size_t len;
};

/* Under ASan every VM costs far more host memory (shadow, quarantine):
 * fewer VMs there, and no RSS bound (LeakSanitizer checks leaks). */
#ifdef __SANITIZE_ADDRESS__
#define DEFAULT_VMS 1000
#define CHECK_RSS 0
#else
#define DEFAULT_VMS 8000
#define CHECK_RSS 1
#endif

static int vm_count(void)
{
	const char *v = getenv("MICROVM_DENSITY_VMS");
	return v && *v ? atoi(v) : DEFAULT_VMS;
}

static void limit_fds(void)
{
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = FD_LIMIT;
	if (rl.rlim_max < FD_LIMIT)
		rl.rlim_max = FD_LIMIT; /* root (CAP_SYS_RESOURCE) may raise it */
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		fail_msg("cannot set RLIMIT_NOFILE to %d (hard limit too low, not root): "
			 "run as root or raise the hard limit", FD_LIMIT);
}

/* Pages of @vm's guest RAM resident in this process. */
static long guest_resident_kib(microvm *vm)
{
	const struct guest_mem *m = &vm->kvm.mem;
	size_t pages = (size_t)(m->size / 4096);
	unsigned char *vec = malloc(pages);
	assert_non_null(vec);
	assert_int_equal(mincore(m->host, m->size, vec), 0);
	long n = 0;
	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	free(vec);
	return n * 4;
}

/* Read the shared pipe until @lines lines arrived, counting those that
 * contain @needle into *@matched; returns the bytes read. */
static size_t read_lines(struct density *d, const char *needle, int lines, int *matched)
{
	int seen = 0;
	size_t total = 0;
	*matched = 0;
	while (seen < lines) {
		struct pollfd p = { d->out[0], POLLIN, 0 };
		if (poll(&p, 1, GUEST_TIMEOUT_MS) != 1)
			fail_msg("shared output: %d of %d lines", seen, lines);
		ssize_t r = read(d->out[0], d->buf + d->len, sizeof(d->buf) - 1 - d->len);
		assert_true(r > 0);
		d->len += (size_t)r;
		total += (size_t)r;
		d->buf[d->len] = 0;
		char *nl;
		while ((nl = memchr(d->buf, '\n', d->len))) {
			*nl = 0;
			seen++;
			*matched += strstr(d->buf, needle) != NULL;
			d->len -= (size_t)(nl + 1 - d->buf);
			memmove(d->buf, nl + 1, d->len);
		}
	}
	return total;
}

static bool with_pit(void)
{
	const char *e = getenv("MICROVM_DENSITY_PIT");
	return e && strcmp(e, "1") == 0;
}

static microvm *idle_vm(struct density *d, int i)
{
	microvm *vm = tiny_vm("idle", NULL, 1, d->out[1]);
	assert_int_equal(microvm_set_pit(vm, with_pit()), 0);
	if (i < SAMPLE) {
		assert_int_equal(pipe2(d->in[i], O_CLOEXEC), 0);
		assert_int_equal(microvm_set_console(vm, d->in[i][0], d->out[1]), 0);
	}
	start_ok(vm);
	return vm;
}

/* Each of the sample answers one line; latencies in ms into @ms. */
static void ping_sample(struct density *d, double *ms)
{
	for (int i = 0; i < SAMPLE; i++) {
		char line[32];
		int len = snprintf(line, sizeof(line), "p%d\n", i);
		double t0 = now_ms();
		assert_int_equal(write(d->in[i][1], line, (size_t)len), len);
		line[len - 1] = 0;
		char want[40];
		snprintf(want, sizeof(want), "idle: %s", line);
		int matched;
		read_lines(d, want, 1, &matched);
		assert_int_equal(matched, 1);
		ms[i] = now_ms() - t0;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct usage {
	int fds;
	int threads;     /* the process's, without the runtime's event threads */
	int kvm_threads; /* of those, KVM's own per-VM tasks (see count_threads) */
	long rss_kib;
};

/* Threads of this process by name. KVM adds one task per VM to the process
 * that created it ("kvm-nx-lpage-recovery", the host's NX huge page
 * mitigation; none with the kvm module's nx_huge_pages=never): counted
 * apart, the library cannot avoid it. */
static void count_threads(int *all, int *kvm)
{
	DIR *d = opendir("/proc/self/task");
	assert_non_null(d);
	struct dirent *e;
	*all = *kvm = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; /* exited meanwhile */
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = 0;
		fclose(f);
		(*all)++;
		*kvm += strncmp(comm, "kvm-", 4) == 0;
	}
	closedir(d);
}

static struct usage usage_now(void)
{
	struct usage u = { .fds = kvm_test_fds(), .rss_kib = kvm_test_rss_kib() };
	count_threads(&u.threads, &u.kvm_threads);
	u.threads -= kvm_test_event_threads();
	return u;
}

/* After destroy: wait (bounded) for exiting threads to be gone, and give
 * freed heap back to the system before RSS is compared. */
static struct usage settled_usage(int threads)
{
	struct usage u = usage_now();
	for (int i = 0; i < 3000 && u.threads > threads; i++) {
		usleep(10000);
		u = usage_now();
	}
	malloc_trim(0);
	u.rss_kib = kvm_test_rss_kib();
	return u;
}

/* Start all; prints the start rate of each step (100, 1000, ... VMs). */
static void start_all(struct density *d)
{
	double t0 = now_ms(), mark = t0;
	int next = 100, prev = 0;
	for (int i = 0; i < d->n; i++) {
		d->vms[i] = idle_vm(d, i);
		if (i + 1 != next && i + 1 != d->n)
			continue;
		double t = now_ms();
		printf("  %5d VMs started in %.0f ms (%d to %d: %.0f starts/s)\n", i + 1, t - t0,
		       prev, i + 1, (i + 1 - prev) * 1000.0 / (t - mark));
		mark = t;
		prev = i + 1;
		next *= 10;
	}
	/* The serial console writes a byte at a time, so lines of VMs that
	 * print at the same moment may interleave: count newlines and bytes. */
	int matched;
	size_t bytes = read_lines(d, "idle: ready", d->n, &matched);
	assert_int_equal(bytes, (size_t)d->n * strlen("idle: ready\n"));
	printf("  all %d printed their line (%d of them not interleaved with another's)\n", d->n,
	       matched);
}

static void destroy_all(struct density *d)
{
	double t0 = now_ms();
	for (int i = 0; i < d->n; i++)
		microvm_destroy(d->vms[i]);
	double t1 = now_ms();
	assert_int_equal(microvm_teardown_wait(-1), 0);
	printf("  destroyed %d VMs: %.0f ms for the calls (%.1f us each), %.0f ms until the "
	       "kernel's teardown was done\n", d->n, t1 - t0, (t1 - t0) * 1000 / d->n,
	       now_ms() - t0);
	for (int i = 0; i < SAMPLE && i < d->n; i++) {
		close(d->in[i][0]);
		close(d->in[i][1]);
	}
}

static void report_latency(double *ms, int n)
{
	qsort(ms, (size_t)n, sizeof(*ms), cmp_double);
	printf("  console answers of %d sampled VMs: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", n,
	       ms[n / 2], ms[n * 99 / 100], ms[n - 1]);
}

static long guest_total_kib(struct density *d)
{
	long kib = 0;
	for (int i = 0; i < d->n; i++)
		kib += guest_resident_kib(d->vms[i]);
	return kib;
}

static void test_density(void **state)
{
	(void)state;
	SKIP_WITHOUT_KVM();
	static struct density d;
	d.n = vm_count();
	assert_true(d.n >= SAMPLE);
	d.vms = calloc((size_t)d.n, sizeof(*d.vms));
	assert_non_null(d.vms);
	limit_fds();
	assert_int_equal(pipe2(d.out, O_CLOEXEC), 0);
	assert_true(fcntl(d.out[1], F_SETPIPE_SZ, 1 << 20) > 0);
	struct usage base = usage_now();
	start_all(&d);
	struct usage up = usage_now();
	long guest = guest_total_kib(&d);
	double ms[SAMPLE];
	ping_sample(&d, ms);
	int lib_threads = (up.threads - up.kvm_threads) - (base.threads - base.kvm_threads);
	printf("  %d VMs running: fds %d -> %d (%.2f per VM, the sample's %d pipe fds aside)\n"
	       "  threads %d -> %d: %.2f library threads per VM (+%d shared event threads), "
	       "%.2f KVM tasks per VM\n"
	       "  RSS %ld -> %ld KiB: guest pages %ld KiB (%.1f per VM), the rest %.1f KiB per VM\n",
	       d.n, base.fds, up.fds, (double)(up.fds - base.fds - 2 * SAMPLE) / d.n, 2 * SAMPLE,
	       base.threads, up.threads, (double)lib_threads / d.n, kvm_test_event_threads(),
	       (double)(up.kvm_threads - base.kvm_threads) / d.n, base.rss_kib, up.rss_kib, guest,
	       (double)guest / d.n, (double)(up.rss_kib - base.rss_kib - guest) / d.n);
	int pits = kvm_test_pit_threads();
	printf("  host kernel threads for the VMs' PITs: %d (%s)\n", pits,
	       with_pit() ? "MICROVM_DENSITY_PIT=1" : "no PIT");
	report_latency(ms, SAMPLE);
	assert_int_equal(pits, with_pit() ? d.n : 0);
	for (int i = 0; i < d.n; i++)
		assert_int_equal(microvm_state(d.vms[i]), MICROVM_STATE_RUNNING);
	assert_true(up.fds - base.fds <= 2 * d.n + 2 * SAMPLE);
	assert_int_equal(lib_threads, d.n); /* one vCPU thread each, nothing else */
	if (CHECK_RSS)
		assert_true(up.rss_kib - base.rss_kib - guest <= 64L * d.n);
	destroy_all(&d);
	struct usage end = settled_usage(base.threads);
	printf("  after destroy: fds %d, threads %d, RSS %ld KiB (baseline %d, %d, %ld KiB)\n",
	       end.fds, end.threads, end.rss_kib, base.fds, base.threads, base.rss_kib);
	assert_int_equal(end.fds, base.fds);
	assert_int_equal(end.threads, base.threads);
	if (CHECK_RSS) /* allocator noise, not per-VM growth */
		assert_true(end.rss_kib - base.rss_kib < 4096);
	close(d.out[0]);
	close(d.out[1]);
	free(d.vms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_density),
	};
	return cmocka_run_group_tests_name("kvm_density", tests, require_kvm, wait_teardown_done);
}
