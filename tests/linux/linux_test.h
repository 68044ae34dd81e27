/* Helpers shared by the Linux-guest test programs (run by run.sh). */
#ifndef LINUX_TEST_H
#define LINUX_TEST_H

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

#define BASE_CMDLINE "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux"

#endif
