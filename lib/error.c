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

void vm_error_text(const struct microvm *vm, char *buf, size_t len)
{
	struct microvm *m = (struct microvm *)vm; /* the lock, not the text */
	pthread_mutex_lock(&m->diag.err_lock);
	snprintf(buf, len, "%s", m->diag.last_error);
	pthread_mutex_unlock(&m->diag.err_lock);
}

/* The copy microvm_last_error() returns: one per thread, so no other
 * thread's failing call can change it while its caller reads it. */
static __thread char last_error_copy[sizeof(((struct microvm *)0)->diag.last_error)];

MICROVM_API const char *microvm_last_error(const microvm *vm)
{
	if (!vm)
		return "";
	vm_error_text(vm, last_error_copy, sizeof(last_error_copy));
	return last_error_copy;
}

int vm_error(struct microvm *vm, int err, const char *fmt, ...)
{
	char text[sizeof(vm->diag.last_error)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&vm->diag.err_lock);
	memcpy(vm->diag.last_error, text, strlen(text) + 1);
	pthread_mutex_unlock(&vm->diag.err_lock);
	vm_log(vm, MICROVM_LOG_ERROR, "%s (%s)", text, microvm_strerror(err));
	return err;
}
