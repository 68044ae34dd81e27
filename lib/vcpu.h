/* vCPU threads: KVM_RUN loop, exit dispatch, pause/stop requests, kicks. */
#ifndef MICROVM_VCPU_H
#define MICROVM_VCPU_H

#include "vm.h"

/* Thread entry for one vCPU (argument: struct vcpu *). */
void *vcpu_thread(void *arg);

/* Make every started vCPU leave KVM_RUN soon. Call with vm->lock held. */
void vcpu_kick_all(struct microvm *vm);

/* Index of the vCPU running on this thread, or UINT32_MAX. */
uint32_t vcpu_current_index(void);

/*
 * For device code that has to wait on a vCPU thread (e.g. for a console fd to
 * accept output): call it between waits. Parks the vCPU while the VM is
 * paused; returns false if the VM is stopping (give up the wait). Returns
 * true at once on a non-vCPU thread. The caller must not hold locks another
 * vCPU could need to reach its own park point.
 */
bool vcpu_yield(void);

/* Install the no-op kick handler if @signo has the default disposition. */
void vcpu_install_kick_handler(int signo);

#endif
