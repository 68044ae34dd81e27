#include "reaper.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REAPER_STACK_SIZE (64 * 1024)
#define REAPER_THREADS_DEFAULT 16
#define REAPER_BACKLOG_DEFAULT 256

static struct {
	pthread_mutex_t lock;
	pthread_cond_t idle; /* pending dropped */
	struct reap *head, *tail;
	unsigned pending; /* queued or being released */
	unsigned threads;
	unsigned max_threads, backlog;
} rq = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0,
	 REAPER_THREADS_DEFAULT, REAPER_BACKLOG_DEFAULT };

void reap_now(struct reap *rp)
{
	for (int i = 0; i < rp->nruns; i++)
		munmap(rp->runs[i], rp->run_size);
	gm_release(&rp->mem);
	for (int i = 0; i < rp->nfds; i++)
		close(rp->fds[i]);
}

static struct reap *pop(void)
{
	struct reap *rp = rq.head;
	if (rp) {
		rq.head = rp->next;
		if (!rq.head)
			rq.tail = NULL;
	}
	return rp;
}

static void done_one(void)
{
	pthread_mutex_lock(&rq.lock);
	rq.pending--;
	pthread_cond_broadcast(&rq.idle);
	pthread_mutex_unlock(&rq.lock);
}

/* Release queued VMs until the queue is empty, then end. */
static void *reaper_thread(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&rq.lock);
		struct reap *rp = pop();
		if (!rp) {
			rq.threads--;
			pthread_cond_broadcast(&rq.idle);
			pthread_mutex_unlock(&rq.lock);
			return NULL;
		}
		pthread_mutex_unlock(&rq.lock);
		reap_now(rp);
		free(rp);
		done_one();
	}
}

/* A detached reaper thread with all signals blocked. Under rq.lock. */
static bool spawn(void)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, REAPER_STACK_SIZE);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	bool ok = pthread_create(&t, &attr, reaper_thread, NULL) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (ok)
		rq.threads++;
	return ok;
}

void reap_later(struct reap *rp)
{
	pthread_mutex_lock(&rq.lock);
	bool queued = rq.pending < rq.backlog;
	if (queued && rq.threads < rq.max_threads && rq.pending >= rq.threads)
		queued = spawn() || rq.threads > 0;
	if (queued) {
		rp->next = NULL;
		if (rq.tail)
			rq.tail->next = rp;
		else
			rq.head = rp;
		rq.tail = rp;
	}
	rq.pending++;
	pthread_mutex_unlock(&rq.lock);
	if (!queued) {
		reap_now(rp);
		free(rp);
		done_one();
	}
}

void reaper_set_limits(unsigned threads, unsigned backlog)
{
	pthread_mutex_lock(&rq.lock);
	if (threads)
		rq.max_threads = threads;
	if (backlog)
		rq.backlog = backlog;
	pthread_mutex_unlock(&rq.lock);
}

void reaper_stats(unsigned *threads, unsigned *pending)
{
	pthread_mutex_lock(&rq.lock);
	*threads = rq.threads;
	*pending = rq.pending;
	pthread_mutex_unlock(&rq.lock);
}

int reaper_wait(int timeout_ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	if (timeout_ms > 0) {
		dl.tv_sec += timeout_ms / 1000;
		dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
	}
	int r = 0;
	pthread_mutex_lock(&rq.lock);
	while ((rq.pending || rq.threads) && r == 0) {
		if (timeout_ms == 0)
			r = -ETIMEDOUT;
		else if (timeout_ms < 0)
			pthread_cond_wait(&rq.idle, &rq.lock);
		else if (pthread_cond_timedwait(&rq.idle, &rq.lock, &dl) == ETIMEDOUT)
			r = rq.pending || rq.threads ? -ETIMEDOUT : 0;
	}
	pthread_mutex_unlock(&rq.lock);
	return r;
}
