/* The console: microvm_set_console_type(), and the virtio-console row of the
 * device table (lib/vm_kinds.h). The device is lib/virtio/console.c; the
 * UART is a platform device. */
#include <errno.h>

#include "arch/arch.h"
#include "errbuf.h"
#include "virtio/devices.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_kinds.h"

static int console_add(struct microvm *vm)
{
	if (vm->dev.vconsole)
		return 0; /* added by an earlier start attempt */
	struct virtio_console *c = virtio_console_new(&vm->dev.host);
	if (!c)
		return vm_error(vm, -ENOMEM, "virtio-console: out of memory");
	int r = vm_virtio_add(vm, &virtio_console_ops, c, NULL);
	if (r < 0) {
		virtio_console_free(c);
		return r;
	}
	vm->dev.vconsole = c;
	return 0;
}

/* The console fds go to one device; the other is connected to nothing (a
 * console device kept from an earlier start attempt included). */
static int console_start_add(struct microvm *vm)
{
	bool virtio_con = vm->cfg.console_type == MICROVM_CONSOLE_VIRTIO;
	int r = virtio_con ? console_add(vm) : 0;
	if (r < 0)
		return r;
	platform_set_console(vm->dev.platform, virtio_con ? -1 : vm->cfg.console_in,
			     virtio_con ? -1 : vm->cfg.console_out);
	if (vm->dev.vconsole)
		virtio_console_set_fds(vm->dev.vconsole, virtio_con ? vm->cfg.console_in : -1,
				       virtio_con ? vm->cfg.console_out : -1);
	return 0;
}

static int console_restore_add(struct microvm *vm, const void *fdt, int node,
			       const microvm_restore_config *cfg, uint32_t instance, char *err,
			       size_t errlen)
{
	(void)fdt, (void)node, (void)cfg;
	if (instance > 0)
		return errbuf_fail(err, errlen, -EINVAL, "state: more than one virtio-console");
	int r = microvm_set_console_type(vm, MICROVM_CONSOLE_VIRTIO);
	if (r == 0)
		r = console_add(vm);
	return r < 0 ? errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm)) : 0;
}

const struct vm_kind vm_kind_console = {
	.ops = &virtio_console_ops,
	.start_add = console_start_add,
	.restore_add = console_restore_add,
};

MICROVM_API int microvm_set_console_type(microvm *vm, uint32_t type)
{
	int r = vm_lock_configured(vm, "set_console_type");
	if (r < 0)
		return r;
	if (type != MICROVM_CONSOLE_SERIAL && type != MICROVM_CONSOLE_VIRTIO)
		r = vm_error(vm, -EINVAL, "set_console_type: unknown console type %u", type);
	else
		vm->cfg.console_type = type;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}
