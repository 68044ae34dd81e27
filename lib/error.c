#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "errbuf.h"
#include "vm.h"

MICROVM_API const char *microvm_strerror(int err)
{
	switch (err) {
	case 0: return "Success";
	case -EINVAL: return "Invalid argument";
	case -ENOMEM: return "Out of memory";
	case -ENOENT: return "No such file or directory";
	case -EACCES: return "Permission denied";
	case -EBUSY: return "VM is running or paused (call needs a configured VM)";
	case -ETIMEDOUT: return "Timed out";
	case -ENOEXEC: return "Not a supported kernel image";
	case -ENOTSUP: return "Not supported by this host's KVM";
	case -EEXIST: return "Already exists";
	case -EIO: return "Input/output error";
	case -ENODEV: return "No such device (is KVM available?)";
	case -EMFILE: return "Too many open files";
	case -E2BIG: return "Argument too large";
	case -ERANGE: return "Value out of range";
	case -EFAULT: return "Bad address";
	case -EAGAIN: return "Resource temporarily unavailable";
	default:
		break;
	}
	/* strerrordesc_np is thread-safe and returns static strings. */
	if (err < 0 && err > -4096) {
		const char *s = strerrordesc_np(-err);
		if (s)
			return s;
	}
	return "Unknown error";
}

MICROVM_API const char *microvm_last_error(const microvm *vm)
{
	return vm ? vm->last_error : "";
}

int vm_error(struct microvm *vm, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(vm->last_error, sizeof(vm->last_error), fmt, ap);
	va_end(ap);
	vm_log(vm, MICROVM_LOG_ERROR, "%s (%s)", vm->last_error, microvm_strerror(err));
	return err;
}

int errbuf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}
