/* Entropy: microvm_set_rng(), and the virtio-rng row of the device table
 * (lib/vm_kinds.h). The device is lib/virtio/rng.c. */
#include <errno.h>

#include "errbuf.h"
#include "virtio/devices.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_kinds.h"

static int rng_add(struct microvm *vm)
{
	if (vm->dev.vrng)
		return 0; /* added by an earlier start attempt */
	struct virtio_rng *r = virtio_rng_new(&vm->dev.host);
	if (!r)
		return vm_error(vm, -ENOMEM, "virtio-rng: out of memory");
	int e = vm_virtio_add(vm, &virtio_rng_ops, r, NULL);
	if (e < 0) {
		virtio_rng_free(r);
		return e;
	}
	vm->dev.vrng = r;
	return 0;
}

static int rng_start_add(struct microvm *vm)
{
	return vm->cfg.rng_enabled ? rng_add(vm) : 0;
}

static int rng_restore_add(struct microvm *vm, const void *fdt, int node,
			   const microvm_restore_config *cfg, uint32_t instance, char *err,
			   size_t errlen)
{
	(void)fdt, (void)node, (void)cfg;
	if (instance > 0)
		return errbuf_fail(err, errlen, -EINVAL, "state: more than one virtio-rng");
	int r = microvm_set_rng(vm, 1);
	if (r == 0)
		r = rng_add(vm);
	return r < 0 ? errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm)) : 0;
}

const struct vm_kind vm_kind_rng = {
	.ops = &virtio_rng_ops,
	.start_add = rng_start_add,
	.restore_add = rng_restore_add,
};

MICROVM_API int microvm_set_rng(microvm *vm, int enabled)
{
	int r = vm_lock_configured(vm, "set_rng");
	if (r < 0)
		return r;
	vm->cfg.rng_enabled = enabled != 0;
	pthread_mutex_unlock(&vm->api_lock);
	return 0;
}
