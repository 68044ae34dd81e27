/*
 * The machine configuration a snapshot carries (vCPUs, RAM, ACPI): one table
 * (lib/vm_config.c) names each field, how to read it from a VM and which
 * public setter applies it, so saving and restoring it is a loop and restore
 * validates exactly like the setters do. Devices carry their own
 * configuration in their own snapshot nodes.
 */
#ifndef MICROVM_VM_CONFIG_H
#define MICROVM_VM_CONFIG_H

#include <stddef.h>

struct microvm;
struct st_writer;

/* Write every field as a property of @node. */
void vm_config_save(const struct microvm *vm, struct st_writer *w, int node);
/* Apply every field of @node to a CONFIGURED @vm through its setter. 0 or
 * negative errno with a message in @err (a missing field, or the setter's
 * message for a value it refuses). */
int vm_config_load(struct microvm *vm, const void *fdt, int node, char *err, size_t errlen);

#endif
