#include <errno.h>
#include <stdio.h>

#include "vm.h"

MICROVM_API int microvm_set_log(microvm *vm, microvm_log_fn fn, void *opaque, int min_level)
{
	int r = vm_lock_configured(vm, "set_log");
	if (r < 0)
		return r;
	if (min_level < MICROVM_LOG_ERROR || min_level > MICROVM_LOG_DEBUG) {
		r = vm_error(vm, -EINVAL, "set_log: level %d out of range %d..%d", min_level,
			     MICROVM_LOG_ERROR, MICROVM_LOG_DEBUG);
		pthread_mutex_unlock(&vm->api_lock);
		return r;
	}
	vm->diag.log_fn = fn;
	vm->diag.log_opaque = opaque;
	vm->diag.log_level = min_level;
	pthread_mutex_unlock(&vm->api_lock);
	return 0;
}

void vm_log(const struct microvm *vm, int level, const char *fmt, ...)
{
	if (!vm->diag.log_fn || level > vm->diag.log_level)
		return;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	vm->diag.log_fn(vm->diag.log_opaque, level, buf);
}
