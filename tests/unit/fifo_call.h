/*
 * Shared by the unit tests that check a path argument naming a FIFO is
 * refused at once. A FIFO is not a regular file; opening one for reading
 * blocks until a writer appears, so a call that wrongly open()s it would hang
 * the test. call_on_fifo() therefore runs the call in a thread; if it has not
 * returned within FIFO_CALL_TIMEOUT_SEC, it opens the FIFO's write end to
 * release it and reports that the call blocked. The caller decides what that
 * means (normally: fail).
 *
 * Static functions only: each test program includes this once.
 */
#ifndef MICROVM_TESTS_UNIT_FIFO_CALL_H
#define MICROVM_TESTS_UNIT_FIFO_CALL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long the call may take before it counts as blocked. */
#define FIFO_CALL_TIMEOUT_SEC 2

struct fifo_call {
	int (*fn)(void *arg, const char *path);
	void *arg;
	const char *path;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int result;
};

static void *fifo_call_thread(void *p)
{
	struct fifo_call *c = p;
	int r = c->fn(c->arg, c->path);
	pthread_mutex_lock(&c->lock);
	c->result = r;
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static bool fifo_call_done(struct fifo_call *c)
{
	pthread_mutex_lock(&c->lock);
	bool done = c->done;
	pthread_mutex_unlock(&c->lock);
	return done;
}

/*
 * Creates a FIFO at /tmp/microvm-unit-<tag>-fifo-<pid> (its path is written
 * to path_out), runs fn(arg, path) in a thread and returns what fn returned.
 * *blocked is set when fn had not returned within FIFO_CALL_TIMEOUT_SEC and
 * had to be released by opening the FIFO's write end. The FIFO is removed
 * before returning. fn has returned and its thread has been joined by then,
 * so whatever fn wrote through arg may be read by the caller.
 */
static int call_on_fifo(const char *tag, int (*fn)(void *arg, const char *path), void *arg,
			bool *blocked, char *path_out, size_t path_len)
{
	int n = snprintf(path_out, path_len, "/tmp/microvm-unit-%s-fifo-%ld", tag,
			 (long)getpid());
	assert_true(n > 0 && (size_t)n < path_len);
	unlink(path_out);
	assert_int_equal(mkfifo(path_out, 0600), 0);

	struct fifo_call c = { .fn = fn, .arg = arg, .path = path_out };
	pthread_mutex_init(&c.lock, NULL);
	pthread_cond_init(&c.cond, NULL);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, fifo_call_thread, &c), 0);

	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += FIFO_CALL_TIMEOUT_SEC;
	pthread_mutex_lock(&c.lock);
	while (!c.done && pthread_cond_timedwait(&c.cond, &c.lock, &deadline) != ETIMEDOUT)
		;
	*blocked = !c.done;
	pthread_mutex_unlock(&c.lock);
	/* Release a blocked open() by appearing as a writer. */
	while (!fifo_call_done(&c)) {
		int fd = open(path_out, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0)
			close(fd);
		usleep(10000);
	}
	pthread_join(t, NULL);
	pthread_cond_destroy(&c.cond);
	pthread_mutex_destroy(&c.lock);
	unlink(path_out);
	return c.result;
}

#endif /* MICROVM_TESTS_UNIT_FIFO_CALL_H */
