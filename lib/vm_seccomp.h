/*
 * seccomp filters on the threads the library creates (vCPU threads and the
 * event-loop thread), never on the embedder's threads. Opt-in per VM with
 * microvm_set_seccomp(); the allow-lists and why each entry is there are in
 * lib/vm_seccomp.c.
 */
#ifndef MICROVM_VM_SECCOMP_H
#define MICROVM_VM_SECCOMP_H

#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"

struct microvm;

/* Thread kinds: each has its own allow-list. */
#define SECCOMP_KIND_VCPU 0
#define SECCOMP_KIND_EVLOOP 1
#define SECCOMP_KINDS 2

#define SECCOMP_MAX_EXTRA 64 /* microvm_seccomp_allow() entries per VM */

struct vm_seccomp {
	uint32_t mode; /* MICROVM_SECCOMP_*; a setting (CONFIGURED only) */
	uint32_t n_extra;
	int32_t extra[SECCOMP_MAX_EXTRA]; /* microvm_seccomp_allow() */
	/* The BPF programs (struct sock_fprog + its instructions), built by
	 * the start sequence on the API thread, loaded by each thread. */
	void *prog[SECCOMP_KINDS];
};

/* Build the programs for vm->sec.mode (no-op if OFF). 0 or a negative
 * errno (message recorded). API thread, during the start sequence. */
int vm_seccomp_prepare(struct microvm *vm);
/* Free the programs. */
void vm_seccomp_release(struct microvm *vm);
/* On a library thread, first thing: install the filter of @kind on this
 * thread only (no-op if OFF). On failure the VM is asked to stop with
 * MICROVM_EXIT_INTERNAL_ERROR and a negative errno is returned. */
int vm_seccomp_enter(struct microvm *vm, int kind, uint32_t vcpu);
/* The event-loop filter of @vm for the thread pool (evloop_init): false
 * if the VM runs without seccomp. @f borrows vm->sec. */
bool vm_seccomp_evloop_filter(const struct microvm *vm, struct evloop_filter *f);
/* Around each event-loop handler of a filtered VM (struct evloop's
 * before/after): a forbidden call in between stops that VM. */
void vm_seccomp_work_begin(void *vm);
void vm_seccomp_work_end(void *vm);
/* At a safe point of that thread (outside any lock): if a forbidden system
 * call was trapped since the last check, stop the VM with
 * MICROVM_EXIT_INTERNAL_ERROR naming the call; true then. */
bool vm_seccomp_check(void);

#endif
