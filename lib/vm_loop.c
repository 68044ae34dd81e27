/* Device work on the embedder's loop: microvm_set_event_loop(),
 * microvm_loop_fd(), microvm_loop_run(). The VM's loop is then a manual
 * one (lib/evloop.h) that vm_devices_start() makes instead of attaching
 * the VM to a shared event thread. */
#include <errno.h>

#include "evloop.h"
#include "vm.h"

MICROVM_API int microvm_set_event_loop(microvm *vm, uint32_t mode)
{
	int r = vm_lock_configured(vm, "set_event_loop");
	if (r < 0)
		return r;
	if (mode > MICROVM_LOOP_EMBEDDER)
		r = vm_error(vm, -EINVAL, "set_event_loop: unknown mode %u", mode);
	else
		vm->cfg.embedder_loop = mode == MICROVM_LOOP_EMBEDDER;
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

/* The VM's loop if the embedder runs it and it exists: once the VM left
 * CONFIGURED, it stays until microvm_destroy. */
static struct evloop *embedder_loop(const microvm *vm, const char *what)
{
	if (!vm)
		return NULL;
	struct microvm *m = (struct microvm *)vm; /* errors are recorded */
	/* The setting is fixed once the VM left CONFIGURED (read after). */
	if (microvm_state(vm) == MICROVM_STATE_CONFIGURED) {
		vm_error(m, -EINVAL, "%s: the VM was not started", what);
		return NULL;
	}
	if (!vm->cfg.embedder_loop) {
		vm_error(m, -EINVAL, "%s: the VM's devices run on the library's event threads "
			 "(microvm_set_event_loop(vm, MICROVM_LOOP_EMBEDDER) before the start)", what);
		return NULL;
	}
	return &m->dev.evloop;
}

MICROVM_API int microvm_loop_fd(const microvm *vm)
{
	struct evloop *l = embedder_loop(vm, "loop_fd");
	return l ? evloop_fd(l) : -EINVAL;
}

MICROVM_API int microvm_loop_run(microvm *vm, int timeout_ms)
{
	struct evloop *l = embedder_loop(vm, "loop_run");
	if (!l)
		return -EINVAL;
	return evloop_poll(l, timeout_ms < 0 ? -1 : timeout_ms);
}
