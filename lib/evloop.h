/*
 * Device event loops. The devices of many VMs are served by a small pool
 * of event threads per process (one epoll each), not by a thread per VM.
 * Each VM has a struct evloop: its share of one pool thread. All handlers
 * of a VM run on that one thread, in order; a thread runs at most
 * EVLOOP_BATCH handlers per wake-up and epoll is level-triggered, so busy
 * VMs sharing a thread take turns.
 *
 * Threads are shared only by VMs whose seccomp filter is the same (a
 * filter cannot be removed from a thread). They are created on demand, up
 * to evloop_set_max_threads() per filter, and kept for the life of the
 * process (stopped at exit or unload once no VM uses them).
 */
#ifndef MICROVM_EVLOOP_H
#define MICROVM_EVLOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVLOOP_BATCH 16

struct evloop;
struct evthread;

struct ev_handler {
	int fd;
	void (*fn)(void *opaque, uint32_t events); /* runs on the VM's event thread */
	void *opaque;
	/* evloop.c's, under the loop's lock */
	struct evloop *loop;
	uint32_t events; /* as last asked (evloop_add/evloop_mod) */
	bool parked;     /* fired while the loop was stopped: watching nothing */
	struct ev_handler *prev, *next;
};

/* Set what @h watches and calls (not the loop's part of it). */
static inline void ev_handler_set(struct ev_handler *h, int fd,
				  void (*fn)(void *opaque, uint32_t events), void *opaque)
{
	h->fd = fd;
	h->fn = fn;
	h->opaque = opaque;
}

/* A seccomp filter a pool thread installs on itself before its first
 * handler. Threads are shared by VMs with byte-equal keys. */
struct evloop_filter {
	const void *key;
	size_t key_len;
	int (*install)(const void *arg); /* on the new thread; 0 or -errno */
	const void *arg;                 /* only read during evloop_init() */
};

struct evloop {
	struct evthread *t;
	pthread_mutex_t lock; /* the handler list, their events and parked flags */
	bool running;         /* changed under the thread's lock */
	struct ev_handler *handlers;
	/* Optional: called on the event thread around each handler of this
	 * loop (seccomp attributes a forbidden call to its VM this way). */
	void (*before)(void *owner);
	void (*after)(void *owner);
	void *owner;
};

/* Attach @l to a pool thread (created if needed) running @f (NULL: none).
 * Handlers may be added at once; none runs before evloop_start(). 0 or a
 * negative errno. */
int evloop_init(struct evloop *l, const struct evloop_filter *f);
/* A loop with no thread: the caller runs its handlers with evloop_poll()
 * (tests, fuzzers, a VM with MICROVM_LOOP_EMBEDDER). Started already. */
int evloop_init_manual(struct evloop *l);
/* Manual loops: wait up to @timeout_ms (0: not at all) and run one batch
 * of handlers on the calling thread. Number run, or a negative errno. */
int evloop_poll(struct evloop *l, int timeout_ms);
/* A manual loop's epoll fd: readable while a handler is ready. */
int evloop_fd(const struct evloop *l);

/* Watch @h->fd for @events (EPOLLIN...). @h is borrowed until removed.
 * -EPERM if the fd cannot be polled (a regular file). Any thread. */
int evloop_add(struct evloop *l, struct ev_handler *h, uint32_t events);
/* Change the events watched (0 = pause watching). Any thread. */
int evloop_mod(struct evloop *l, struct ev_handler *h, uint32_t events);
/* Stop watching. Any thread; never blocks. Another thread may still be
 * running @h when this returns, or run it once more: free it only on its
 * event thread or while the loop is stopped. */
void evloop_del(struct evloop *l, struct ev_handler *h);

/* Let the handlers run (first start, or after evloop_stop()). */
void evloop_start(struct evloop *l);
/* When this returns, no handler of @l runs or will run until
 * evloop_start(); the thread goes on serving other VMs. Not from a
 * handler. No-op on a loop not initialised. */
void evloop_stop(struct evloop *l);
/* Remove every handler and detach from the thread (which may then be
 * given to another VM). Safe on a zeroed or released loop; after it, add
 * and mod fail with -EBADF and del does nothing. */
void evloop_release(struct evloop *l);

/* Most pool threads per filter for loops attached from now on; 0 = the
 * default (the number of online CPUs). */
void evloop_set_max_threads(unsigned n);
/* Pool threads now (all filters). */
unsigned evloop_thread_count(void);

#endif
