/*
 * The kernel side of destroyed VMs, released off the caller's path.
 * Closing a KVM VM fd blocks for the kernel's teardown (milliseconds), so
 * microvm_destroy() queues what the VM held here and a few reaper threads
 * (at most reaper_set_limits()'s, created on demand, gone when the queue is
 * empty) release it. A queue at its backlog limit makes the destroying
 * thread release its own VM, so a process destroying faster than the
 * kernel tears down waits instead of piling up VMs.
 */
#ifndef MICROVM_REAPER_H
#define MICROVM_REAPER_H

#include <linux/kvm.h>
#include <stddef.h>

#include "memory.h"
#include "microvm.h"

/* What a VM holds in the kernel: released together. */
struct reap {
	int nfds;
	int fds[MICROVM_MAX_VCPUS + 2];
	int nruns;
	struct kvm_run *runs[MICROVM_MAX_VCPUS];
	size_t run_size;
	struct guest_mem mem;
	struct reap *next;
};

/* Release @rp now, on this thread. */
void reap_now(struct reap *rp);
/* Queue @rp (malloc'ed, adopted) for a reaper thread; released on this
 * thread if the backlog is full or no thread can be made. */
void reap_later(struct reap *rp);
/* 0 = keep the current value. */
void reaper_set_limits(unsigned threads, unsigned backlog);
void reaper_stats(unsigned *threads, unsigned *pending);
/* Wait until nothing is queued or being released (@timeout_ms < 0: no
 * limit). 0 or -ETIMEDOUT. */
int reaper_wait(int timeout_ms);

#endif
