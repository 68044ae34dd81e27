/* Per-VM event loop: one thread waiting in epoll for device work (console
 * input, queue notifications from ioeventfds, io_uring completions, vsock
 * host sockets). Handlers run on that thread. */
#ifndef MICROVM_EVLOOP_H
#define MICROVM_EVLOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct ev_handler {
	int fd;
	void (*fn)(void *opaque, uint32_t events); /* runs on the loop thread */
	void *opaque;
};

struct evloop {
	int epfd;
	int wake_fd; /* eventfd: tells the thread to exit (or to park) */
	pthread_t thread;
	bool started;
	/* evloop_pause(): under pause_lock; pausing 1 = asked, 2 = parked. */
	bool pause_ready;
	int pausing;
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	/* Optional, set between evloop_init() and evloop_start(): called on the
	 * loop thread when it starts, and after each batch of handlers. */
	void (*thread_init)(void *opaque);
	void (*after_events)(void *opaque);
	void *hook_opaque;
};

/* 0 or negative errno. */
int evloop_init(struct evloop *l);
/* Watch @h->fd for @events (EPOLLIN...). @h is borrowed until removed.
 * -EPERM if the fd cannot be polled (a regular file). */
int evloop_add(struct evloop *l, struct ev_handler *h, uint32_t events);
/* Change the events watched (0 = pause watching). Any thread. */
int evloop_mod(struct evloop *l, struct ev_handler *h, uint32_t events);
void evloop_del(struct evloop *l, struct ev_handler *h);
/* Start the thread (all signals blocked in it). */
int evloop_start(struct evloop *l);
/* Stop and join the thread; handlers are not called after this returns.
 * The loop can be started again (snapshots pause it this way). */
void evloop_stop(struct evloop *l);
/* Park the thread between handlers until evloop_resume(): handlers are
 * not called meanwhile (as after evloop_stop, without ending the thread:
 * microvm_reset pauses it this way). No-op on a loop not started. */
void evloop_pause(struct evloop *l);
void evloop_resume(struct evloop *l);
/* Close the fds. Safe on a zeroed or released loop. */
void evloop_release(struct evloop *l);

#endif
