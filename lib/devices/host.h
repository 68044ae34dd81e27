/*
 * What a device may use of the VM that holds it, and nothing else: guest
 * RAM (through the checked accessor, with dirty tracking), the VM's event
 * loop, interrupt lines and eventfds, ending the VM, logging. The VM fills
 * one of these (lib/vm.c) and every device gets a pointer to it; devices do
 * not see struct microvm. A NULL host (unit tests) logs nothing and has no
 * interrupts.
 */
#ifndef MICROVM_DEVICES_HOST_H
#define MICROVM_DEVICES_HOST_H

#include <stdbool.h>
#include <stdint.h>

struct evloop;
struct guest_mem;

struct dev_host {
	struct guest_mem *mem;
	struct evloop *loop; /* device fds are watched here */
	void *ctx;           /* the VM, for the callbacks */
	void (*log)(void *ctx, int level, const char *msg);
	/* End the VM with a MICROVM_EXIT_* reason (guest reset, power off). */
	void (*exit)(void *ctx, uint32_t reason, const char *msg);
	/* Whether the VM has stopped (its vCPUs will not run again). */
	bool (*stopped)(void *ctx);
	/* For a device that waits on a vCPU thread (a console fd not taking
	 * output): call between waits; parks the vCPU while the VM is paused,
	 * false if the VM is stopping (give up). True on other threads. */
	bool (*yield)(void *ctx);
	/* Drive interrupt line @gsi to @level; no-op before the VM exists. */
	int (*irq_line)(void *ctx, uint32_t gsi, int level);
	/* An eventfd that raises @gsi when written (KVM_IRQFD). */
	int (*irqfd)(void *ctx, int fd, uint32_t gsi);
	/* An eventfd written when the guest writes @datamatch (@len bytes) to
	 * MMIO address @addr (KVM_IOEVENTFD), without a VM exit to us. */
	int (*ioeventfd)(void *ctx, int fd, uint64_t addr, uint32_t len, uint64_t datamatch);
};

/* printf-style helpers over the callbacks; NULL-safe. */
void host_log(const struct dev_host *h, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void host_exit(const struct dev_host *h, uint32_t reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int host_irq_line(const struct dev_host *h, uint32_t gsi, int level);
bool host_stopped(const struct dev_host *h);
bool host_yield(const struct dev_host *h);

#endif
