/* vsock: microvm_set_vsock() and microvm_vsock_connect(), and the
 * virtio-vsock row of the device table (lib/vm_kinds.h). The device is
 * lib/virtio/vsock.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"
#include "errbuf.h"
#include "virtio/mmio.h"
#include "virtio/vsock.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_kinds.h"

static int vsock_add(struct microvm *vm)
{
	char err[256] = "";
	if (vm->dev.vsock) { /* added by an earlier start attempt */
		int r = virtio_vsock_reconfigure(vm->dev.vsock, vm->cfg.vsock_cid, vm->cfg.vsock_uds_path, err,
						 sizeof(err));
		return r < 0 ? vm_error(vm, r, "virtio-vsock: %s", err) : 0;
	}
	struct virtio_vsock *v;
	int r = virtio_vsock_device_new(&vm->dev.host, vm->cfg.vsock_cid, vm->cfg.vsock_uds_path, &v, err,
					sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "virtio-vsock: %s", err);
	struct virtio_device *vdev;
	r = vm_virtio_add(vm, &virtio_vsock_ops, v, &vdev);
	if (r < 0) {
		virtio_vsock_free(v);
		return r;
	}
	virtio_vsock_attach(v, vdev);
	vm->dev.vsock = v;
	return 0;
}

static int vsock_start_add(struct microvm *vm)
{
	return vm->cfg.vsock_enabled ? vsock_add(vm) : 0;
}

/* Restore: the saved CID and socket path, or the caller's for this clone. */
static int vsock_restore_add(struct microvm *vm, const void *fdt, int node,
			     const microvm_restore_config *cfg, uint32_t instance, char *err,
			     size_t errlen)
{
	if (instance > 0)
		return errbuf_fail(err, errlen, -EINVAL, "state: more than one virtio-vsock");
	microvm_vsock_config vc = MICROVM_VSOCK_CONFIG_INIT;
	int r = virtio_vsock_config_from_state(fdt, node, &vc.guest_cid, &vc.uds_path, err,
					       errlen);
	if (r < 0)
		return r;
	if (cfg->vsock_cid)
		vc.guest_cid = cfg->vsock_cid;
	if (cfg->vsock_uds_path)
		vc.uds_path = cfg->vsock_uds_path;
	r = microvm_set_vsock(vm, &vc);
	if (r == 0)
		r = vsock_add(vm);
	return r < 0 ? errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm)) : 0;
}

const struct vm_kind vm_kind_vsock = {
	.ops = &virtio_vsock_ops,
	.start_add = vsock_start_add,
	.restore_add = vsock_restore_add,
};

static int check_vsock_config(struct microvm *vm, const microvm_vsock_config *cfg)
{
	if (cfg->flags)
		return vm_error(vm, -EINVAL, "set_vsock: unknown flags 0x%x", cfg->flags);
	if (cfg->guest_cid < 3 || cfg->guest_cid >= UINT32_MAX)
		return vm_error(vm, -EINVAL, "set_vsock: guest CID %llu is out of range 3..%u",
				(unsigned long long)cfg->guest_cid, UINT32_MAX - 1);
	if (cfg->uds_path && (!cfg->uds_path[0] || strlen(cfg->uds_path) > VSOCK_UDS_PATH_MAX))
		return vm_error(vm, -EINVAL, "set_vsock: uds_path must be 1..%u bytes long",
				VSOCK_UDS_PATH_MAX);
	return 0;
}

MICROVM_API int microvm_set_vsock(microvm *vm, const microvm_vsock_config *ucfg)
{
	int r = vm_lock_configured(vm, "set_vsock");
	if (r < 0)
		return r;
	char *path = NULL, err[200];
	microvm_vsock_config cfg;
	if ((r = abi_copy_in(&cfg, sizeof(cfg), ucfg, ABI_VSOCK_CONFIG_MIN,
			     "set_vsock: microvm_vsock_config", err, sizeof(err))) < 0)
		r = vm_error(vm, r, "%s", err);
	else
		r = check_vsock_config(vm, &cfg);
	if (r == 0 && cfg.uds_path && !(path = strdup(cfg.uds_path)))
		r = vm_error(vm, -ENOMEM, "set_vsock: out of memory");
	if (r == 0) {
		free(vm->cfg.vsock_uds_path);
		vm->cfg.vsock_uds_path = path;
		vm->cfg.vsock_cid = cfg.guest_cid;
		vm->cfg.vsock_enabled = true;
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_vsock_connect(microvm *vm, uint32_t port, int timeout_ms)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = 0, state = microvm_state(vm);
	if (state != MICROVM_STATE_RUNNING && state != MICROVM_STATE_PAUSED)
		r = vm_error(vm, -EINVAL, "vsock_connect: the VM is not running");
	else if (!vm->dev.vsock || !virtio_vsock_attached(vm->dev.vsock))
		r = vm_error(vm, -ENODEV, "vsock_connect: the VM has no vsock device");
	else if (port == UINT32_MAX || timeout_ms < -1)
		r = vm_error(vm, -EINVAL, "vsock_connect: bad port %u or timeout %d", port,
			     timeout_ms);
	if (r < 0) {
		pthread_mutex_unlock(&vm->api_lock);
		return r;
	}
	/* The API lock is released once the request is registered, so the VM
	 * can be stopped or destroyed meanwhile (destroy waits for us). */
	return virtio_vsock_connect(vm->dev.vsock, port, timeout_ms, &vm->api_lock);
}
