/*
 * bench-density: the start path against its floor, VM throughput, and what
 * a start and a destroy cost as the process holds more VMs.
 *
 *   bench-density [--runs N] [--cycles N] [--live 100,1000,8000]
 *                 [--qemu-runs N] [--teardown-threads N]
 *
 * 1. Start: create -> first guest output of the tiny guest (1 vCPU,
 *    128 MiB), three ways in one run, interleaved: the floor (the raw KVM
 *    calls a VMM cannot avoid, bench/floor.h), the library (the "hello"
 *    payload, first byte on the console pipe) and QEMU -M microvm with
 *    KVM (fork + exec to the first byte of a 16-byte BIOS on its serial
 *    port: a process start). The same for a vmlinux-sized image (big.elf:
 *    20 MiB of data, 4 MiB of bss), mapped from the boot-image cache and
 *    read with the cache off, next to a bare memcpy of its 20 MiB into
 *    fresh memory. Then what destroying costs the caller.
 * 2. Throughput: create + start + run to the guest's exit + destroy, from
 *    1 and 2 threads (the library's teardown finishing included), and the
 *    floor doing the same, closing its VM in the loop or on 16 threads.
 * 3. Scaling: start (to microvm_start's return) and destroy (the call)
 *    with 100, 1000 and 8000 idle VMs alive in the process.
 * Medians over the runs; ratios in the last column. No VT-x here: KVM
 * runs nested under kvm_pvm, every ioctl costs more than on bare metal.
 */
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <microvm.h>

#include "bench.h"
#include "floor.h"

#define MAX_LIVE_STEPS 8

struct opts {
	int runs, cycles, qemu_runs, nlive;
	int live[MAX_LIVE_STEPS];
};

static void die(const char *what, microvm *vm)
{
	fprintf(stderr, "bench-density: %s: %s\n", what, vm ? microvm_last_error(vm) : "");
	exit(1);
}

/* Whether the library's VMs have a PIT (the rows "without a PIT" clear it,
 * and set the floor's no_pit alike), and whether a start follows the last
 * VM's destroy at once (else once its teardown is done, as the floor's,
 * which closes synchronously). */
static bool with_pit = true, back_to_back;

static microvm *tiny(const char *payload, uint32_t mib, int out)
{
	microvm *vm;
	if (microvm_create(&vm) < 0)
		die("create", NULL);
	if (microvm_set_memory(vm, mib) < 0 || microvm_set_console(vm, -1, out) < 0 ||
	    microvm_set_kernel(vm, payload, NULL) < 0 || microvm_set_pit(vm, with_pit) < 0)
		die("configure", vm);
	return vm;
}

static void wait_byte(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char c;
	if (poll(&p, 1, 60000) != 1 || read(fd, &c, 1) != 1)
		die("no guest output", NULL);
}

/* ------------------------------------------------------------- 1. start */

static double ours_start(const char *payload, int out[2], double *destroy_us)
{
	double t0 = now_ms();
	microvm *vm = tiny(payload, 128, out[1]);
	if (microvm_start(vm) < 0)
		die("start", vm);
	wait_byte(out[0]);
	double t1 = now_ms();
	microvm_destroy(vm);
	*destroy_us = (now_ms() - t1) * 1000;
	char buf[256];
	if (!back_to_back)
		microvm_teardown_wait(-1);
	while (poll(&(struct pollfd){ out[0], POLLIN, 0 }, 1, 0) == 1 &&
	       read(out[0], buf, sizeof(buf)) > 0)
		; /* the rest of its output */
	return t1 - t0;
}

static double floor_once(const struct floor_host *h, double *destroy_us)
{
	struct floor_vm f;
	double t0 = now_ms();
	floor_start(h, &f);
	double t1 = now_ms();
	floor_destroy(h, &f);
	*destroy_us = (now_ms() - t1) * 1000;
	return t1 - t0;
}

/* A 64 KiB BIOS whose reset vector jumps to: mov al,'A'; mov dx,0x3f8;
 * out dx,al; then writes 0 to the isa-debug-exit port and halts. */
static const char *qemu_bios(void)
{
	static char path[] = "/tmp/bench-density-bios-XXXXXX";
	static uint8_t img[65536];
	static const uint8_t code[] = { 0xb0, 'A', 0xba, 0xf8, 0x03, 0xee, 0xb0, 0x00, 0xe6, 0xf4, 0xf4 };
	memset(img, 0xf4, sizeof(img));
	memcpy(img + 0xff00, code, sizeof(code));
	uint16_t rel = (uint16_t)(0xff00 - 0xfff3);
	img[0xfff0] = 0xe9;
	img[0xfff1] = (uint8_t)rel;
	img[0xfff2] = (uint8_t)(rel >> 8);
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, img, sizeof(img)) != (ssize_t)sizeof(img))
		die("writing the QEMU BIOS", NULL);
	close(fd);
	return path;
}

/* fork + exec QEMU; ms to its first serial byte, *exit_ms to its exit. */
static double qemu_once(const char *bios, double *exit_ms)
{
	int p[2];
	if (pipe(p) < 0)
		die("pipe", NULL);
	double t0 = now_ms();
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 2);
		execlp("qemu-system-x86_64", "qemu-system-x86_64", "-M",
		       "microvm,x-option-roms=off,pit=off,pic=off,rtc=off", "-accel", "kvm", "-m",
		       "128", "-nodefaults", "-no-user-config", "-display", "none", "-bios", bios,
		       "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	wait_byte(p[0]);
	double first = now_ms() - t0;
	int st;
	waitpid(pid, &st, 0);
	*exit_ms = now_ms() - t0;
	close(p[0]);
	return first;
}

static bool have_qemu(void)
{
	return system("qemu-system-x86_64 --version >/dev/null 2>&1") == 0;
}

#define HELLO BENCH_TINY_DIR "/hello.elf"
#define ONCE BENCH_TINY_DIR "/once.elf"
#define BIG BENCH_TINY_DIR "/big.elf"
#define BIG_BYTES (20u << 20)

/* Copying the big payload's 20 MiB into fresh anonymous memory: what any
 * loader that copies the image pays, whatever else it does. */
static double copy_floor(void)
{
	static uint8_t src[BIG_BYTES];
	memset(src, 1, sizeof(src)); /* resident, as the page cache is */
	double t0 = now_ms();
	uint8_t *dst = mmap(NULL, BIG_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		die("mmap", NULL);
	memcpy(dst, src, BIG_BYTES);
	double t = now_ms() - t0;
	munmap(dst, BIG_BYTES);
	return t;
}

static void image_cache_mib(uint32_t mib)
{
	microvm_runtime_config rc = MICROVM_RUNTIME_CONFIG_INIT;
	rc.image_cache_mib = mib;
	if (microvm_runtime_configure(&rc) < 0)
		die("image cache", NULL);
}

/* The start of a vmlinux-sized image (big.elf: 20 MiB of data, 4 MiB of
 * bss): mapped from the boot-image cache (its copy made by an untimed
 * first start), then read with the cache off, next to the copy any loader
 * that reads the image pays (interleaved with the second). */
static void big_image_rows(const struct opts *o, int out[2], double floor_ms)
{
	int n = o->runs < 50 ? o->runs : 50;
	double *b = calloc((size_t)n, sizeof(double)), *u = calloc((size_t)n, sizeof(double));
	double *c = calloc((size_t)n, sizeof(double)), unused;
	ours_start(BIG, out, &unused);
	for (int i = 0; i < n; i++)
		b[i] = ours_start(BIG, out, &unused);
	image_cache_mib(MICROVM_IMAGE_CACHE_OFF);
	for (int i = 0; i < n; i++) {
		c[i] = copy_floor();
		u[i] = ours_start(BIG, out, &unused);
	}
	image_cache_mib(256);
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "libmicrovm: 20 MiB image (big.elf)",
	       median(b, n), quantile(b, n, 0.9), median(b, n) / floor_ms);
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "  the same, boot-image cache off",
	       median(u, n), quantile(u, n, 0.9), median(u, n) / floor_ms);
	printf("| %-44s | %9.3f | %9.3f | %9s |\n", "  memcpy of 20 MiB into fresh memory alone",
	       median(c, n), quantile(c, n, 0.9), "");
	free(b);
	free(u);
	free(c);
}

/* The same machine without a PIT, the floor likewise, interleaved; then
 * the library's starts back to back (no wait for the last teardown), with
 * and without a PIT alternating. The "once" payload, the floor's guest
 * work: with "hello", which goes on printing, the reader of the console
 * pipe was seen waiting for the vCPU thread to finish the line (~1 ms)
 * in machines without a PIT (docs/performance.md). */
static void no_pit_rows(const struct opts *o, const struct floor_host *h, int out[2],
			double floor_ms)
{
	struct floor_host nh = *h;
	nh.no_pit = true;
	size_t n = (size_t)o->runs;
	double *f = calloc(n, sizeof(double)), *u = calloc(n, sizeof(double));
	double *bp = calloc(n, sizeof(double)), *bn = calloc(n, sizeof(double)), unused;
	with_pit = false;
	for (int i = 0; i < o->runs; i++) {
		f[i] = floor_once(&nh, &unused);
		u[i] = ours_start(ONCE, out, &unused);
	}
	back_to_back = true;
	for (int i = 0; i < o->runs; i++) {
		with_pit = true;
		bp[i] = ours_start(ONCE, out, &unused);
		with_pit = false;
		bn[i] = ours_start(ONCE, out, &unused);
	}
	back_to_back = false;
	with_pit = true;
	microvm_teardown_wait(-1);
	double mf = median(f, o->runs);
	printf("| %-44s | %9.3f | %9.3f | %9s |\n", "floor without a PIT", mf,
	       quantile(f, o->runs, 0.9), "1.00");
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "libmicrovm without a PIT (once payload)",
	       median(u, o->runs), quantile(u, o->runs, 0.9), median(u, o->runs) / mf);
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "  back to back, with a PIT (once)",
	       median(bp, o->runs), quantile(bp, o->runs, 0.9), median(bp, o->runs) / floor_ms);
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "  back to back, without a PIT (once)",
	       median(bn, o->runs), quantile(bn, o->runs, 0.9), median(bn, o->runs) / mf);
	free(f);
	free(u);
	free(bp);
	free(bn);
}

static void bench_start(const struct opts *o, const struct floor_host *h)
{
	int out[2];
	if (pipe(out) < 0)
		die("pipe", NULL);
	double *fl = calloc((size_t)o->runs, sizeof(double)), *ours = calloc((size_t)o->runs, sizeof(double));
	double *fd_us = calloc((size_t)o->runs, sizeof(double)), *od_us = calloc((size_t)o->runs, sizeof(double));
	for (int i = 0; i < 20; i++)
		ours_start(HELLO, out, &od_us[0]); /* warm: the runtime's threads, caches */
	for (int i = 0; i < o->runs; i++) {
		fl[i] = floor_once(h, &fd_us[i]);
		ours[i] = ours_start(HELLO, out, &od_us[i]);
	}
	double mf = median(fl, o->runs), mo = median(ours, o->runs);
	printf("\n1. create -> first guest output, tiny guest (1 vCPU, 128 MiB), %d runs each, "
	       "interleaved (ms)\n\n", o->runs);
	printf("| %-44s | %9s | %9s | %9s |\n", "", "median", "p90", "x floor");
	printf("|---|---:|---:|---:|\n");
	printf("| %-44s | %9.3f | %9.3f | %9s |\n", "floor: raw KVM calls + first KVM_RUN", mf,
	       quantile(fl, o->runs, 0.9), "1.00");
	printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "libmicrovm: create + start -> first byte", mo,
	       quantile(ours, o->runs, 0.9), mo / mf);
	no_pit_rows(o, h, out, mf);
	big_image_rows(o, out, mf);
	if (o->qemu_runs > 0 && have_qemu()) {
		const char *bios = qemu_bios();
		double *q = calloc((size_t)o->qemu_runs, sizeof(double));
		double *qx = calloc((size_t)o->qemu_runs, sizeof(double));
		for (int i = 0; i < o->qemu_runs; i++)
			q[i] = qemu_once(bios, &qx[i]);
		unlink(bios);
		double mq = median(q, o->qemu_runs);
		printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "QEMU -M microvm: exec -> first byte",
		       mq, quantile(q, o->qemu_runs, 0.9), mq / mf);
		printf("| %-44s | %9.3f | %9.3f | %9.2f |\n", "QEMU: exec -> process exit",
		       median(qx, o->qemu_runs), quantile(qx, o->qemu_runs, 0.9),
		       median(qx, o->qemu_runs) / mf);
		printf("| %-44s | %9s | %9s | %9.1fx |\n", "QEMU / libmicrovm (first byte)", "", "", mq / mo);
		free(q);
		free(qx);
	}
	printf("\ndestroy, the caller's time (us): floor (closing the fds: the kernel's teardown) "
	       "%.0f, libmicrovm %.0f (%.3fx; its teardown runs on the runtime's threads)\n",
	       median(fd_us, o->runs), median(od_us, o->runs),
	       median(od_us, o->runs) / median(fd_us, o->runs));
	free(fl);
	free(ours);
	free(fd_us);
	free(od_us);
	close(out[0]);
	close(out[1]);
}

/* ------------------------------------------------------- 2. throughput */

/* The floor's teardown off the caller's path, as the library does it: a
 * queue served by TEARDOWN_THREADS threads (the library's default). */
#define TEARDOWN_THREADS 16
#define REAP_QUEUE 256

static struct {
	pthread_mutex_t lock;
	pthread_cond_t more, room;
	struct floor_vm q[REAP_QUEUE];
	unsigned head, tail;
	bool stop;
	const struct floor_host *h;
} reap = { .lock = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER,
	    .room = PTHREAD_COND_INITIALIZER };

static void *reap_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&reap.lock);
	for (;;) {
		while (reap.head == reap.tail && !reap.stop)
			pthread_cond_wait(&reap.more, &reap.lock);
		if (reap.head == reap.tail)
			break;
		struct floor_vm f = reap.q[reap.head++ % REAP_QUEUE];
		pthread_cond_signal(&reap.room);
		pthread_mutex_unlock(&reap.lock);
		floor_destroy(reap.h, &f);
		pthread_mutex_lock(&reap.lock);
	}
	pthread_mutex_unlock(&reap.lock);
	return NULL;
}

static void reap_queue(const struct floor_vm *f)
{
	pthread_mutex_lock(&reap.lock);
	while (reap.tail - reap.head == REAP_QUEUE)
		pthread_cond_wait(&reap.room, &reap.lock);
	reap.q[reap.tail++ % REAP_QUEUE] = *f;
	pthread_cond_signal(&reap.more);
	pthread_mutex_unlock(&reap.lock);
}

enum cycle_kind { FLOOR_SYNC, FLOOR_QUEUED, OURS };

struct cycler {
	const struct floor_host *h;
	int n;
	enum cycle_kind kind;
};

static void *cycle_thread(void *arg)
{
	const struct cycler *c = arg;
	for (int i = 0; i < c->n; i++) {
		if (c->kind != OURS) {
			struct floor_vm f;
			floor_start(c->h, &f);
			if (c->kind == FLOOR_QUEUED)
				reap_queue(&f);
			else
				floor_destroy(c->h, &f);
			continue;
		}
		microvm *vm = tiny(ONCE, 128, -1);
		microvm_exit ex = MICROVM_EXIT_INIT;
		if (microvm_start(vm) < 0 || microvm_wait(vm, 60000, &ex) < 0)
			die("cycle", vm);
		microvm_destroy(vm);
	}
	return NULL;
}

/* VMs per second from @threads threads doing @n cycles in all, until the
 * last teardown is done. */
static double cycle_rate(const struct floor_host *h, int threads, int n, enum cycle_kind kind)
{
	pthread_t t[2], r[TEARDOWN_THREADS];
	struct cycler c = { h, n / threads, kind };
	reap.h = h;
	reap.stop = false;
	double t0 = now_ms();
	for (int i = 0; kind == FLOOR_QUEUED && i < TEARDOWN_THREADS; i++)
		pthread_create(&r[i], NULL, reap_thread, NULL);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, cycle_thread, &c);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	pthread_mutex_lock(&reap.lock);
	reap.stop = true;
	pthread_cond_broadcast(&reap.more);
	pthread_mutex_unlock(&reap.lock);
	for (int i = 0; kind == FLOOR_QUEUED && i < TEARDOWN_THREADS; i++)
		pthread_join(r[i], NULL);
	microvm_teardown_wait(-1);
	return c.n * threads * 1000.0 / (now_ms() - t0);
}

static void bench_throughput(const struct opts *o, const struct floor_host *h)
{
	printf("\n2. create + start + run to the guest's exit + destroy (once payload: one "
	       "byte to COM1 and a reset; 128 MiB), %d cycles, teardown included (VMs/s); "
	       "floor: the raw KVM calls to the same byte, closing the VM in the loop, or "
	       "queued to %d threads as the library does\n\n",
	       o->cycles, TEARDOWN_THREADS);
	printf("| %-12s | %11s | %13s | %10s | %15s |\n", "threads, PIT", "floor, sync",
	       "floor, queued", "libmicrovm", "x floor, queued");
	printf("|---|---:|---:|---:|---:|\n");
	struct floor_host nh = *h;
	nh.no_pit = true;
	for (int k = 0; k < 4; k++) {
		int threads = 1 + k % 2;
		with_pit = k < 2;
		const struct floor_host *fh = with_pit ? h : &nh;
		double s = cycle_rate(fh, threads, o->cycles, FLOOR_SYNC);
		double q = cycle_rate(fh, threads, o->cycles, FLOOR_QUEUED);
		double r = cycle_rate(fh, threads, o->cycles, OURS);
		printf("| %d, %-9s | %11.0f | %13.0f | %10.0f | %15.2f |\n", threads,
		       with_pit ? "PIT" : "no PIT", s, q, r, r / q);
	}
	with_pit = true;
}

/* ----------------------------------------------------------- 3. scaling */

#define PROBE 100

/* Median start (ms) of PROBE floor VMs (destroyed after, untimed). */
static double probe_floor(const struct floor_host *h)
{
	static struct floor_vm f[PROBE];
	double s[PROBE];
	for (int i = 0; i < PROBE; i++) {
		double t0 = now_ms();
		floor_start(h, &f[i]);
		s[i] = now_ms() - t0;
	}
	for (int i = 0; i < PROBE; i++)
		floor_destroy(h, &f[i]);
	return median(s, PROBE);
}

/* Median start (ms) and destroy (us) of PROBE VMs. */
static void probe(double *start_ms, double *destroy_us)
{
	static microvm *vms[PROBE];
	double s[PROBE], d[PROBE];
	for (int i = 0; i < PROBE; i++) {
		double t0 = now_ms();
		vms[i] = tiny(BENCH_TINY_DIR "/idle.elf", 16, -1);
		if (microvm_start(vms[i]) < 0)
			die("start", vms[i]);
		s[i] = now_ms() - t0;
	}
	for (int i = 0; i < PROBE; i++) {
		double t0 = now_ms();
		microvm_destroy(vms[i]);
		d[i] = (now_ms() - t0) * 1000;
	}
	microvm_teardown_wait(-1);
	*start_ms = median(s, PROBE);
	*destroy_us = median(d, PROBE);
}

static void bench_scaling(const struct opts *o, const struct floor_host *h)
{
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	int most = o->live[o->nlive - 1];
	microvm **live = calloc((size_t)most, sizeof(*live));
	printf("\n3. start of %d VMs with N idle VMs alive (idle payload, 16 MiB; floor: to "
	       "its first port write, libmicrovm: to microvm_start's return) and destroy (the "
	       "call), medians\n\n", PROBE);
	printf("| %-8s | %16s | %18s | %9s | %18s |\n", "alive", "floor start, ms",
	       "libmicrovm start, ms", "x floor", "libmicrovm destroy, us");
	printf("|---|---:|---:|---:|---:|\n");
	int n = 0;
	for (int k = 0; k < o->nlive; k++) {
		for (; n < o->live[k]; n++) {
			live[n] = tiny(BENCH_TINY_DIR "/idle.elf", 16, -1);
			if (microvm_start(live[n]) < 0)
				die("start", live[n]);
		}
		double s, d, f = probe_floor(h);
		probe(&s, &d);
		printf("| %-8d | %16.3f | %20.3f | %9.2f | %22.1f |\n", n, f, s, s / f, d);
	}
	for (int i = 0; i < n; i++)
		microvm_destroy(live[i]);
	microvm_teardown_wait(-1);
	free(live);
}

/* ------------------------------------------------------------------ main */

static void parse_live(struct opts *o, const char *s)
{
	o->nlive = 0;
	for (char *end; *s && o->nlive < MAX_LIVE_STEPS; s = *end ? end + 1 : end) {
		long v = strtol(s, &end, 10);
		if (v < 0 || (o->nlive && v < o->live[o->nlive - 1]))
			die("--live: ascending counts", NULL);
		o->live[o->nlive++] = (int)v;
	}
	if (!o->nlive)
		die("--live: no counts", NULL);
}

int main(int argc, char **argv)
{
	struct opts o = { .runs = 200, .cycles = 2000, .qemu_runs = 20 };
	microvm_runtime_config rc = MICROVM_RUNTIME_CONFIG_INIT;
	parse_live(&o, "100,1000,8000");
	static const struct option lo[] = {
		{ "runs", required_argument, NULL, 'r' }, { "cycles", required_argument, NULL, 'c' },
		{ "live", required_argument, NULL, 'l' }, { "qemu-runs", required_argument, NULL, 'q' },
		{ "teardown-threads", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'r')
			o.runs = atoi(optarg);
		else if (c == 'c')
			o.cycles = atoi(optarg);
		else if (c == 'l')
			parse_live(&o, optarg);
		else if (c == 'q')
			o.qemu_runs = atoi(optarg);
		else if (c == 't')
			rc.teardown_threads = (uint32_t)atoi(optarg);
		else
			return 2;
	}
	if (o.runs < 1 || o.cycles < 2)
		die("--runs >= 1, --cycles >= 2", NULL);
	if (microvm_runtime_configure(&rc) < 0)
		die("--teardown-threads: 1..64", NULL);
	signal(SIGPIPE, SIG_IGN);
	struct floor_host h;
	floor_host_init(&h);
	printf("bench-density: libmicrovm %s\n", microvm_version());
	bench_start(&o, &h);
	bench_throughput(&o, &h);
	bench_scaling(&o, &h);
	return 0;
}
