#include "evloop.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EVLOOP_STACK_SIZE (256 * 1024)
#define EVLOOP_BATCH 16

int evloop_init(struct evloop *l)
{
	memset(l, 0, sizeof(*l));
	l->epfd = l->wake_fd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wake_fd < 0) {
		int e = -errno;
		evloop_release(l);
		return e;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0) {
		int e = -errno;
		evloop_release(l);
		return e;
	}
	pthread_mutex_init(&l->pause_lock, NULL);
	pthread_cond_init(&l->pause_cond, NULL);
	l->pause_ready = true;
	return 0;
}

int evloop_add(struct evloop *l, struct ev_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0 ? -errno : 0;
}

int evloop_mod(struct evloop *l, struct ev_handler *h, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0 ? -errno : 0;
}

void evloop_del(struct evloop *l, struct ev_handler *h)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
}

/* The wake fd fired: park if evloop_pause() asked (true once resumed),
 * else it is evloop_stop() (false: exit). */
static bool evloop_park(struct evloop *l)
{
	pthread_mutex_lock(&l->pause_lock);
	bool pause = l->pausing == 1;
	if (pause) {
		uint64_t v;
		ssize_t r = read(l->wake_fd, &v, sizeof(v));
		(void)r;
		l->pausing = 2;
		pthread_cond_broadcast(&l->pause_cond);
		while (l->pausing == 2)
			pthread_cond_wait(&l->pause_cond, &l->pause_lock);
	}
	pthread_mutex_unlock(&l->pause_lock);
	return pause;
}

void evloop_pause(struct evloop *l)
{
	if (!l->started)
		return;
	pthread_mutex_lock(&l->pause_lock);
	l->pausing = 1;
	uint64_t one = 1;
	ssize_t r = write(l->wake_fd, &one, sizeof(one));
	(void)r;
	while (l->pausing != 2)
		pthread_cond_wait(&l->pause_cond, &l->pause_lock);
	pthread_mutex_unlock(&l->pause_lock);
}

void evloop_resume(struct evloop *l)
{
	if (!l->started)
		return;
	pthread_mutex_lock(&l->pause_lock);
	l->pausing = 0;
	pthread_cond_broadcast(&l->pause_cond);
	pthread_mutex_unlock(&l->pause_lock);
}

static void *evloop_thread(void *arg)
{
	struct evloop *l = arg;
	struct epoll_event evs[EVLOOP_BATCH];
	if (l->thread_init)
		l->thread_init(l->hook_opaque);
	for (;;) {
		int n = epoll_wait(l->epfd, evs, EVLOOP_BATCH, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			struct ev_handler *h = evs[i].data.ptr;
			if (!h && evloop_park(l))
				continue; /* paused and resumed */
			if (!h)
				return NULL; /* wake_fd: stop */
			h->fn(h->opaque, evs[i].events);
		}
		if (l->after_events)
			l->after_events(l->hook_opaque);
	}
}

int evloop_start(struct evloop *l)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, EVLOOP_STACK_SIZE);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&l->thread, &attr, evloop_thread, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (e)
		return -e;
	l->started = true;
	return 0;
}

void evloop_stop(struct evloop *l)
{
	if (!l->started)
		return;
	uint64_t one = 1;
	ssize_t r = write(l->wake_fd, &one, sizeof(one));
	(void)r;
	pthread_join(l->thread, NULL);
	l->started = false;
	/* Consume the wake-up so a restarted loop does not exit at once. */
	uint64_t v;
	r = read(l->wake_fd, &v, sizeof(v));
	(void)r;
}

void evloop_release(struct evloop *l)
{
	evloop_stop(l);
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	l->epfd = l->wake_fd = -1;
	if (l->pause_ready) {
		pthread_mutex_destroy(&l->pause_lock);
		pthread_cond_destroy(&l->pause_cond);
		l->pause_ready = false;
	}
}
