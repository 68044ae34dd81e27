#include "evloop.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EVTHREAD_STACK_SIZE (256 * 1024)
#define EVTHREAD_MAX_DEFAULT 8

/*
 * One pool thread. Its lock is held while it runs a batch of handlers, so
 * whoever takes it knows no handler runs. Handlers are freed only on this
 * thread or while their loop is stopped (evloop_del), so a batch can hold
 * a freed handler only if a loop was stopped or released since it was
 * fetched (stop_gen changed: the batch is dropped; epoll is
 * level-triggered, what is still ready comes back), or if a handler of
 * this batch removed another (self_del: the rest of the batch is
 * dropped). Removals from other threads drop nothing: a busy VM toggling
 * its watches from its vCPU threads must not starve the thread.
 */
struct evthread {
	int epfd;
	int wake_fd; /* eventfd: tells the thread to exit */
	pthread_t thread;
	bool has_thread; /* false: a manual loop's */
	pthread_mutex_t lock;
	atomic_uint_fast64_t stop_gen;
	bool self_del; /* a handler removed a handler during this batch */
	bool exit;
	/* under pool.lock */
	unsigned nloops;
	void *key;
	size_t key_len;
	int init_result;
	bool init_done;
	struct evthread *next;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a new thread reported how its start went */
	struct evthread *threads;
	unsigned max_threads;
	pthread_once_t once;
} pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, PTHREAD_ONCE_INIT };

/* ---------------------------------------------------------- dispatch */

static __thread struct evthread *current_thread; /* running handlers here */

/* A handler fired: true if it may run; if its loop is stopped, it watches
 * nothing until evloop_start() (so a stopped VM costs no wake-ups). */
static bool may_run(struct ev_handler *h)
{
	struct evloop *l = h->loop;
	if (l->running)
		return true;
	pthread_mutex_lock(&l->lock);
	if (!h->parked) {
		struct epoll_event ev = { .events = 0, .data.ptr = h };
		epoll_ctl(l->t->epfd, EPOLL_CTL_MOD, h->fd, &ev);
		h->parked = true;
	}
	pthread_mutex_unlock(&l->lock);
	return false;
}

/* Run a batch fetched when stop_gen was @gen; under t->lock. False when
 * the thread is told to exit. */
static bool dispatch(struct evthread *t, const struct epoll_event *evs, int n, uint64_t gen)
{
	t->self_del = false;
	for (int i = 0; i < n && atomic_load(&t->stop_gen) == gen && !t->self_del; i++) {
		struct ev_handler *h = evs[i].data.ptr;
		if (!h) {
			uint64_t v;
			ssize_t r = read(t->wake_fd, &v, sizeof(v));
			(void)r;
			if (t->exit)
				return false;
			continue;
		}
		if (!may_run(h))
			continue;
		struct evloop *l = h->loop; /* h may be freed by its handler */
		if (l->before)
			l->before(l->owner);
		h->fn(h->opaque, evs[i].events);
		if (l->after)
			l->after(l->owner);
	}
	return true;
}

/* Wait up to @timeout_ms, then run what is ready. Handlers run, or -1 to
 * exit, or a negative errno. */
static int run_once(struct evthread *t, int timeout_ms)
{
	struct epoll_event evs[EVLOOP_BATCH];
	uint64_t gen = atomic_load(&t->stop_gen);
	int n = epoll_wait(t->epfd, evs, EVLOOP_BATCH, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	pthread_mutex_lock(&t->lock);
	current_thread = t;
	bool go_on = dispatch(t, evs, n, gen);
	current_thread = NULL;
	pthread_mutex_unlock(&t->lock);
	return go_on ? n : -1;
}

static void report_start(struct evthread *t, int r)
{
	pthread_mutex_lock(&pool.lock);
	t->init_result = r;
	t->init_done = true;
	pthread_cond_broadcast(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
}

struct start_arg {
	struct evthread *t;
	const struct evloop_filter *f;
};

static void *evthread_main(void *arg)
{
	struct start_arg *a = arg;
	struct evthread *t = a->t;
	int r = a->f && a->f->install ? a->f->install(a->f->arg) : 0;
	report_start(t, r); /* a is gone after this */
	if (r < 0)
		return NULL;
	while (run_once(t, -1) != -1)
		;
	return NULL;
}

/* ---------------------------------------------------------- threads */

static void evthread_free(struct evthread *t)
{
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->wake_fd >= 0)
		close(t->wake_fd);
	pthread_mutex_destroy(&t->lock);
	free(t->key);
	free(t);
}

/* The fds and lock of a thread, not started; a manual loop (no thread to
 * tell to exit) has no wake_fd. */
static int evthread_alloc(struct evthread **out, bool manual)
{
	struct evthread *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->wake_fd = -1;
	pthread_mutex_init(&t->lock, NULL);
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd >= 0 && !manual)
		t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (t->epfd < 0 || (!manual && (t->wake_fd < 0 ||
					epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wake_fd, &ev) < 0))) {
		int e = -errno;
		evthread_free(t);
		return e;
	}
	*out = t;
	return 0;
}

/* Start @t's thread with all signals blocked and wait until it installed
 * @f. Under pool.lock. */
static int evthread_launch(struct evthread *t, const struct evloop_filter *f)
{
	pthread_attr_t attr;
	sigset_t all, old;
	struct start_arg a = { t, f };
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, EVTHREAD_STACK_SIZE);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&t->thread, &attr, evthread_main, &a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (e)
		return -e;
	while (!t->init_done)
		pthread_cond_wait(&pool.cond, &pool.lock);
	if (t->init_result < 0) {
		pthread_join(t->thread, NULL);
		return t->init_result;
	}
	t->has_thread = true;
	return 0;
}

static bool same_filter(const struct evthread *t, const struct evloop_filter *f)
{
	if (!f || !f->key)
		return !t->key;
	return t->key && t->key_len == f->key_len && !memcmp(t->key, f->key, f->key_len);
}

/* A new pool thread for @f. Under pool.lock. */
static int evthread_new(const struct evloop_filter *f, struct evthread **out)
{
	struct evthread *t;
	int r = evthread_alloc(&t, false);
	if (r < 0)
		return r;
	if (f && f->key) {
		t->key = malloc(f->key_len);
		if (!t->key) {
			evthread_free(t);
			return -ENOMEM;
		}
		memcpy(t->key, f->key, f->key_len);
		t->key_len = f->key_len;
	}
	r = evthread_launch(t, f);
	if (r < 0) {
		evthread_free(t);
		return r;
	}
	t->next = pool.threads;
	pool.threads = t;
	*out = t;
	return 0;
}

static unsigned max_threads(void)
{
	if (pool.max_threads)
		return pool.max_threads;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > EVTHREAD_MAX_DEFAULT ? EVTHREAD_MAX_DEFAULT : (unsigned)n;
}

/* The thread for a new loop with @f: the least loaded with that filter, or
 * a new one while an idle thread is missing and the limit allows. Under
 * pool.lock. */
static int evthread_pick(const struct evloop_filter *f, struct evthread **out)
{
	struct evthread *best = NULL;
	unsigned count = 0;
	for (struct evthread *t = pool.threads; t; t = t->next) {
		if (!same_filter(t, f))
			continue;
		count++;
		if (!best || t->nloops < best->nloops)
			best = t;
	}
	if (!best || (best->nloops > 0 && count < max_threads())) {
		int r = evthread_new(f, out);
		if (r == 0 || !best)
			return r;
	}
	*out = best;
	return 0;
}

/* ------------------------------------------------------- process life */

static void pool_prepare(void)
{
	pthread_mutex_lock(&pool.lock);
}

static void pool_parent(void)
{
	pthread_mutex_unlock(&pool.lock);
}

/* A forked child has none of the threads: forget them (their fds are
 * close-on-exec; the child's VMs get new threads). */
static void pool_child(void)
{
	pthread_mutex_init(&pool.lock, NULL);
	pthread_cond_init(&pool.cond, NULL);
	pool.threads = NULL;
}

static void pool_once(void)
{
	pthread_atfork(pool_prepare, pool_parent, pool_child);
}

/* At exit or unload: stop the threads if no loop uses them (so a leak
 * checker sees nothing left); with loops still attached, leave them. */
__attribute__((destructor)) static void pool_fini(void)
{
	pthread_mutex_lock(&pool.lock);
	for (struct evthread *t = pool.threads; t; t = t->next)
		if (t->nloops) {
			pthread_mutex_unlock(&pool.lock);
			return;
		}
	while (pool.threads) {
		struct evthread *t = pool.threads;
		pool.threads = t->next;
		t->exit = true;
		uint64_t one = 1;
		ssize_t r = write(t->wake_fd, &one, sizeof(one));
		(void)r;
		pthread_join(t->thread, NULL);
		evthread_free(t);
	}
	pthread_mutex_unlock(&pool.lock);
}

void evloop_set_max_threads(unsigned n)
{
	pthread_mutex_lock(&pool.lock);
	pool.max_threads = n;
	pthread_mutex_unlock(&pool.lock);
}

unsigned evloop_thread_count(void)
{
	unsigned n = 0;
	pthread_mutex_lock(&pool.lock);
	for (struct evthread *t = pool.threads; t; t = t->next)
		n++;
	pthread_mutex_unlock(&pool.lock);
	return n;
}

/* ------------------------------------------------------------- loops */

static void loop_setup(struct evloop *l, struct evthread *t)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	l->t = t;
}

int evloop_init(struct evloop *l, const struct evloop_filter *f)
{
	pthread_once(&pool.once, pool_once);
	struct evthread *t = NULL;
	pthread_mutex_lock(&pool.lock);
	int r = evthread_pick(f, &t);
	if (r == 0)
		t->nloops++;
	pthread_mutex_unlock(&pool.lock);
	if (r < 0) {
		memset(l, 0, sizeof(*l));
		return r;
	}
	loop_setup(l, t);
	return 0;
}

int evloop_init_manual(struct evloop *l)
{
	struct evthread *t;
	int r = evthread_alloc(&t, true);
	if (r < 0) {
		memset(l, 0, sizeof(*l));
		return r;
	}
	t->nloops = 1;
	loop_setup(l, t);
	l->running = true;
	return 0;
}

int evloop_poll(struct evloop *l, int timeout_ms)
{
	int n = run_once(l->t, timeout_ms);
	return n == -1 ? 0 : n;
}

int evloop_fd(const struct evloop *l)
{
	return l->t ? l->t->epfd : -EBADF;
}

static void link_handler(struct evloop *l, struct ev_handler *h)
{
	h->prev = NULL;
	h->next = l->handlers;
	if (l->handlers)
		l->handlers->prev = h;
	l->handlers = h;
}

static void unlink_handler(struct evloop *l, struct ev_handler *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else if (l->handlers == h)
		l->handlers = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

int evloop_add(struct evloop *l, struct ev_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	if (!l->t)
		return -EBADF;
	pthread_mutex_lock(&l->lock);
	h->loop = l;
	h->events = events;
	h->parked = false;
	int r = epoll_ctl(l->t->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0 ? -errno : 0;
	if (r == 0)
		link_handler(l, h);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int evloop_mod(struct evloop *l, struct ev_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	int r = 0;
	if (!l->t)
		return -EBADF;
	pthread_mutex_lock(&l->lock);
	h->events = events;
	if (!h->parked && epoll_ctl(l->t->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
		r = -errno;
	pthread_mutex_unlock(&l->lock);
	return r;
}

void evloop_del(struct evloop *l, struct ev_handler *h)
{
	if (!l->t)
		return; /* released: nothing is watched */
	pthread_mutex_lock(&l->lock);
	epoll_ctl(l->t->epfd, EPOLL_CTL_DEL, h->fd, NULL);
	unlink_handler(l, h);
	if (current_thread == l->t)
		l->t->self_del = true; /* from a handler: h may be in this batch */
	pthread_mutex_unlock(&l->lock);
}

void evloop_start(struct evloop *l)
{
	if (!l->t)
		return;
	pthread_mutex_lock(&l->t->lock);
	pthread_mutex_lock(&l->lock);
	l->running = true;
	for (struct ev_handler *h = l->handlers; h; h = h->next) {
		if (!h->parked)
			continue;
		struct epoll_event ev = { .events = h->events, .data.ptr = h };
		epoll_ctl(l->t->epfd, EPOLL_CTL_MOD, h->fd, &ev);
		h->parked = false;
	}
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->t->lock);
}

void evloop_stop(struct evloop *l)
{
	if (!l->t)
		return;
	pthread_mutex_lock(&l->t->lock); /* waits out a running batch */
	l->running = false;
	atomic_fetch_add(&l->t->stop_gen, 1); /* a batch fetched before: dropped */
	pthread_mutex_unlock(&l->t->lock);
}

void evloop_release(struct evloop *l)
{
	struct evthread *t = l->t;
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	pthread_mutex_lock(&l->lock);
	while (l->handlers) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, l->handlers->fd, NULL);
		unlink_handler(l, l->handlers);
	}
	atomic_fetch_add(&t->stop_gen, 1);
	l->running = false;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_destroy(&l->lock);
	l->t = NULL;
	if (!t->has_thread) {
		evthread_free(t);
		return;
	}
	pthread_mutex_lock(&pool.lock);
	t->nloops--;
	pthread_mutex_unlock(&pool.lock);
}
