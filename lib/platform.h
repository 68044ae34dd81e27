/*
 * The platform devices every VM has (UART, i8042, RTC, ACPI power
 * management): one table row each (lib/platform.c) with its ports and its
 * operations, so creating, destroying, saving and restoring them is one loop
 * over the table and snapshot code names none of them.
 */
#ifndef MICROVM_PLATFORM_H
#define MICROVM_PLATFORM_H

#include <stddef.h>

struct microvm;
struct st_writer;

/* Initialise every platform device of a new VM and register its ports.
 * 0 or negative errno. */
int platform_create(struct microvm *vm);
/* Free what platform_create() set up (a partly created VM is fine). */
void platform_destroy(struct microvm *vm);

/* Snapshot: one subnode of @node per device that has state, named after it. */
void platform_save(struct microvm *vm, struct st_writer *w, int node);
/* Restore: load each device's state from its subnode of @node (a missing
 * one is an error). 0 or negative errno with a message in @err. */
int platform_load(struct microvm *vm, const void *fdt, int node, char *err, size_t errlen);

#endif
