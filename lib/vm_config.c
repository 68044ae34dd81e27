#include "vm_config.h"

#include <errno.h>
#include <libfdt.h>
#include <stdint.h>

#include "errbuf.h"
#include "snapshot/state.h"
#include "vm.h"

static uint64_t get_vcpus(const struct microvm *vm) { return vm->cfg.nr_vcpus; }
static uint64_t get_memory(const struct microvm *vm) { return vm->cfg.mem_mib; }
static uint64_t get_acpi(const struct microvm *vm) { return !vm->cfg.no_acpi; }
static uint64_t get_pit(const struct microvm *vm) { return !vm->cfg.no_pit; }

static int set_vcpus(struct microvm *vm, uint64_t v)
{
	return microvm_set_vcpus(vm, v > UINT32_MAX ? UINT32_MAX : (uint32_t)v);
}

static int set_memory(struct microvm *vm, uint64_t v) { return microvm_set_memory(vm, v); }

static int set_acpi(struct microvm *vm, uint64_t v)
{
	if (v > 1) /* never written by us: a bool */
		return vm_error(vm, -EINVAL, "set_acpi: %llu is not 0 or 1",
				(unsigned long long)v);
	return microvm_set_acpi(vm, (int)v);
}

static int set_pit(struct microvm *vm, uint64_t v)
{
	if (v > 1)
		return vm_error(vm, -EINVAL, "set_pit: %llu is not 0 or 1", (unsigned long long)v);
	return microvm_set_pit(vm, (int)v);
}

static const struct config_field {
	const char *name;
	uint64_t (*get)(const struct microvm *vm);
	int (*set)(struct microvm *vm, uint64_t v); /* a public setter */
	bool since_0_9; /* absent from older snapshots: the default then */
} fields[] = {
	{ "vcpus", get_vcpus, set_vcpus, false },
	{ "memory-mib", get_memory, set_memory, false },
	{ "acpi", get_acpi, set_acpi, false },
	{ "pit", get_pit, set_pit, true },
};
#define NR_FIELDS (sizeof(fields) / sizeof(fields[0]))

void vm_config_save(const struct microvm *vm, struct st_writer *w, int node)
{
	for (size_t i = 0; i < NR_FIELDS; i++)
		st_u64(w, node, fields[i].name, fields[i].get(vm));
}

int vm_config_load(struct microvm *vm, const void *fdt, int node, char *err, size_t errlen)
{
	for (size_t i = 0; i < NR_FIELDS; i++) {
		uint64_t v;
		if (fields[i].since_0_9 && !fdt_getprop(fdt, node, fields[i].name, NULL))
			continue;
		int r = st_get_u64(fdt, node, fields[i].name, &v, err, errlen);
		if (r < 0)
			return r;
		r = fields[i].set(vm, v);
		if (r < 0)
			return errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm));
	}
	return 0;
}
