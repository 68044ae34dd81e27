/* Networking: microvm_add_net(), microvm_net_set_link(), microvm_net_stats(),
 * and the virtio-net row of the device table (lib/vm_kinds.h). The device
 * is lib/virtio/net.c, its backends lib/backend/net_*.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "abi.h"
#include "backend/net.h"
#include "errbuf.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "vm.h"
#include "vm_devices.h"
#include "vm_kinds.h"

#define KNOWN_NET_FLAGS (MICROVM_NET_MAC_SET | MICROVM_NET_LINK_DOWN)

static bool is_net(const struct virtio_device *d)
{
	return d->ops == &virtio_net_ops;
}

/* The virtio device of interface @index, or NULL. */
static struct virtio_device *net_dev(const struct microvm *vm, uint32_t index)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		if (is_net(vm->dev.virtio[i]) && k++ == index)
			return vm->dev.virtio[i];
	return NULL;
}

static uint32_t count_nets(const struct microvm *vm)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < vm->dev.nr_virtio; i++)
		n += is_net(vm->dev.virtio[i]);
	return n;
}

static int check_ports(struct microvm *vm, const microvm_net_config *c)
{
	if (c->n_ports > MICROVM_NET_MAX_PORTS || (c->n_ports && !c->ports))
		return vm_error(vm, -EINVAL, "add_net: %u port forwards (at most %d, ports not NULL)",
				c->n_ports, MICROVM_NET_MAX_PORTS);
	if (c->n_ports && c->backend != MICROVM_NET_BACKEND_USER)
		return vm_error(vm, -EINVAL, "add_net: port forwards need the user backend");
	for (uint32_t i = 0; i < c->n_ports; i++) {
		const microvm_net_port *p = &c->ports[i];
		if (p->protocol > MICROVM_NET_UDP || !p->host_port || !p->guest_port)
			return vm_error(vm, -EINVAL, "add_net: port forward %u: protocol %u, ports "
					"%u:%u (protocol TCP/UDP, ports 1..65535)", i, p->protocol,
					p->host_port, p->guest_port);
	}
	return 0;
}

static int check_net_config(struct microvm *vm, const microvm_net_config *c)
{
	if (c->flags & ~KNOWN_NET_FLAGS)
		return vm_error(vm, -EINVAL, "add_net: unknown flags 0x%x", c->flags & ~KNOWN_NET_FLAGS);
	if (c->reserved[0] || c->reserved[1] || c->reserved2)
		return vm_error(vm, -EINVAL, "add_net: reserved fields must be 0");
	if (c->backend < MICROVM_NET_BACKEND_TAP_NAME || c->backend > MICROVM_NET_BACKEND_USER)
		return vm_error(vm, -EINVAL, "add_net: unknown backend %u", c->backend);
	if ((c->flags & MICROVM_NET_MAC_SET) && (c->mac[0] & 1))
		return vm_error(vm, -EINVAL, "add_net: %02x:%02x:%02x:%02x:%02x:%02x is a multicast "
				"MAC address", c->mac[0], c->mac[1], c->mac[2], c->mac[3], c->mac[4],
				c->mac[5]);
	bool fd_kind = c->backend == MICROVM_NET_BACKEND_TAP_FD ||
		       c->backend == MICROVM_NET_BACKEND_STREAM_FD;
	if (fd_kind && (c->fd < 0 || fcntl(c->fd, F_GETFD) < 0))
		return vm_error(vm, -EINVAL, "add_net: fd %d is not an open file descriptor", c->fd);
	if (c->backend == MICROVM_NET_BACKEND_TAP_NAME && !c->tap_name)
		return vm_error(vm, -EINVAL, "add_net: tap_name is NULL");
	return check_ports(vm, c);
}

/* Open the backend @c asks for. 0 or negative errno + message. */
static int open_backend(struct microvm *vm, const microvm_net_config *c, struct net_backend **be)
{
	char err[480];
	int r, fd = -1;
	if (c->backend == MICROVM_NET_BACKEND_TAP_FD || c->backend == MICROVM_NET_BACKEND_STREAM_FD) {
		fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return vm_error(vm, -errno, "add_net: dup of fd %d: %s", c->fd, strerror(errno));
	}
	struct net_port_fwd fwds[MICROVM_NET_MAX_PORTS];
	for (uint32_t i = 0; i < c->n_ports; i++)
		fwds[i] = (struct net_port_fwd){ c->ports[i].protocol == MICROVM_NET_UDP,
						 c->ports[i].host_port, c->ports[i].guest_port };
	switch (c->backend) {
	case MICROVM_NET_BACKEND_TAP_NAME:
		r = net_tap_open(c->tap_name, -1, be, err, sizeof(err));
		break;
	case MICROVM_NET_BACKEND_TAP_FD:
		r = net_tap_open(NULL, fd, be, err, sizeof(err));
		break;
	case MICROVM_NET_BACKEND_STREAM_FD:
		r = net_stream_open(fd, be, err, sizeof(err));
		break;
	default:
		r = net_passt_open(c->passt_path, fwds, c->n_ports, be, err, sizeof(err));
		break;
	}
	return r < 0 ? vm_error(vm, r, "add_net: %s", err) : 0;
}

static int make_config(struct microvm *vm, const microvm_net_config *c, struct net_dev_config *d,
		       struct net_port_fwd *fwds)
{
	memset(d, 0, sizeof(*d));
	d->backend = c->backend;
	d->link_up = !(c->flags & MICROVM_NET_LINK_DOWN);
	d->tap_name = c->backend == MICROVM_NET_BACKEND_TAP_NAME ? (char *)c->tap_name : NULL;
	d->passt_path = c->backend == MICROVM_NET_BACKEND_USER ? (char *)c->passt_path : NULL;
	d->fwds = fwds;
	d->n_fwds = c->n_ports;
	for (uint32_t i = 0; i < c->n_ports; i++)
		fwds[i] = (struct net_port_fwd){ c->ports[i].protocol == MICROVM_NET_UDP,
						 c->ports[i].host_port, c->ports[i].guest_port };
	if (c->flags & MICROVM_NET_MAC_SET) {
		memcpy(d->mac, c->mac, 6);
		return 0;
	}
	if (getrandom(d->mac, 6, 0) != 6)
		return vm_error(vm, -EIO, "add_net: getrandom failed");
	d->mac[0] = (uint8_t)((d->mac[0] & 0xfe) | 0x02); /* unicast, locally administered */
	return 0;
}

static int add_net_locked(struct microvm *vm, const microvm_net_config *ucfg)
{
	microvm_net_config c;
	char err[480];
	int r = abi_copy_in(&c, sizeof(c), ucfg, ABI_NET_CONFIG_MIN, "add_net: microvm_net_config",
			    err, sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "%s", err);
	struct net_dev_config dc;
	struct net_port_fwd fwds[MICROVM_NET_MAX_PORTS];
	if ((r = check_net_config(vm, &c)) < 0 || (r = make_config(vm, &c, &dc, fwds)) < 0)
		return r;
	if (vm->dev.nr_virtio >= VIRTIO_MMIO_MAX_DEVICES)
		return vm_error(vm, -ENOSPC, "add_net: at most %d virtio devices",
				VIRTIO_MMIO_MAX_DEVICES);
	struct net_backend *be;
	if ((r = open_backend(vm, &c, &be)) < 0)
		return r;
	struct virtio_net *n;
	r = virtio_net_device_new(&vm->dev.host, be, &dc, &n, err, sizeof(err)); /* adopts be */
	if (r < 0)
		return vm_error(vm, r, "add_net: %s", err);
	uint32_t index = count_nets(vm);
	struct virtio_device *vdev;
	r = vm_virtio_add(vm, &virtio_net_ops, n, &vdev);
	if (r < 0) {
		virtio_net_free(n);
		return r;
	}
	vdev->features = virtio_net_features(n);
	virtio_net_attach(n, vdev);
	vm_info(vm, "net %u: %s backend, MAC %02x:%02x:%02x:%02x:%02x:%02x%s", index,
		net_backend_name(be), dc.mac[0], dc.mac[1], dc.mac[2], dc.mac[3], dc.mac[4],
		dc.mac[5], be->vnet_hdr ? ", offloads" : "");
	return (int)index;
}

MICROVM_API int microvm_add_net(microvm *vm, const microvm_net_config *cfg)
{
	int r = vm_lock_configured(vm, "add_net");
	if (r < 0)
		return r;
	r = add_net_locked(vm, cfg);
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_net_set_link(microvm *vm, uint32_t index, int up)
{
	if (!vm)
		return -EINVAL;
	pthread_mutex_lock(&vm->api_lock);
	int r = 0;
	struct virtio_device *d = net_dev(vm, index);
	if (microvm_state(vm) == MICROVM_STATE_STOPPED)
		r = vm_error(vm, -EINVAL, "net_set_link: the VM is stopped");
	else if (!d)
		r = vm_error(vm, -ENODEV, "net_set_link: no network interface %u", index);
	if (r == 0) {
		pthread_mutex_lock(&d->lock);
		virtio_net_set_link(d->opaque, up != 0);
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&vm->api_lock);
	return r;
}

MICROVM_API int microvm_net_stats(const microvm *cvm, uint32_t index, microvm_net_counters *out)
{
	if (!cvm || !out)
		return -EINVAL;
	struct microvm *vm = (struct microvm *)cvm;
	char err[200];
	int r = abi_prepare_out(out, sizeof(*out), ABI_NET_STATS_MIN, "net_stats: microvm_net_counters",
				err, sizeof(err));
	if (r < 0)
		return vm_error(vm, r, "%s", err);
	pthread_mutex_lock(&vm->api_lock);
	struct virtio_device *d = net_dev(vm, index);
	if (!d) {
		pthread_mutex_unlock(&vm->api_lock);
		return vm_error(vm, -ENODEV, "net_stats: no network interface %u", index);
	}
	struct net_counters c;
	pthread_mutex_lock(&d->lock);
	virtio_net_counters(d->opaque, &c);
	out->link_up = virtio_net_link(d->opaque);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&vm->api_lock);
	out->rx_packets = c.rx_packets;
	out->rx_bytes = c.rx_bytes;
	out->rx_dropped = c.rx_dropped;
	out->tx_packets = c.tx_packets;
	out->tx_bytes = c.tx_bytes;
	out->tx_dropped = c.tx_dropped;
	out->tx_malformed = c.tx_malformed;
	return 0;
}

MICROVM_API int microvm_net_mac(const microvm *cvm, uint32_t index, uint8_t mac[6])
{
	if (!cvm || !mac)
		return -EINVAL;
	struct microvm *vm = (struct microvm *)cvm;
	pthread_mutex_lock(&vm->api_lock);
	struct virtio_device *d = net_dev(vm, index);
	if (d) {
		pthread_mutex_lock(&d->lock);
		memcpy(mac, virtio_net_config(d->opaque)->mac, 6);
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&vm->api_lock);
	return d ? 0 : vm_error(vm, -ENODEV, "net_mac: no network interface %u", index);
}

/* The fd the caller gave this clone for interface @instance, or -1. */
static int32_t restore_fd(const microvm_restore_config *cfg, uint32_t instance)
{
	return cfg->net_fds && instance < cfg->n_net_fds ? cfg->net_fds[instance] : -1;
}

/*
 * Restore: the interface as saved (backend kind, TAP name, passt and its
 * forwards, link), with a new random MAC address unless the caller keeps
 * the saved one, and a link flap at load. A backend that was an fd takes
 * the caller's fd for this clone (microvm_restore_config.net_fds).
 */
static int net_restore_add(struct microvm *vm, const void *fdt, int node,
			   const microvm_restore_config *cfg, uint32_t instance, char *err,
			   size_t errlen)
{
	struct net_dev_config dc;
	struct net_port_fwd fwds[NET_MAX_FWDS];
	int r = virtio_net_config_from_state(fdt, node, &dc, fwds, err, errlen);
	if (r < 0)
		return r;
	bool fd_kind = dc.backend == NET_BE_TAP_FD || dc.backend == NET_BE_STREAM_FD;
	int32_t fd = restore_fd(cfg, instance);
	if (fd_kind && fd < 0)
		return errbuf_fail(err, errlen, -EINVAL, "restore: network interface %u used an fd "
				   "backend, which a snapshot cannot reopen: give one in net_fds",
				   instance);
	if (!fd_kind && fd >= 0)
		return errbuf_fail(err, errlen, -EINVAL, "restore: net_fds[%u] given, but that "
				   "interface does not use an fd backend", instance);
	microvm_net_port ports[NET_MAX_FWDS];
	for (uint32_t i = 0; i < dc.n_fwds; i++)
		ports[i] = (microvm_net_port){ fwds[i].udp ? MICROVM_NET_UDP : MICROVM_NET_TCP,
					       fwds[i].host_port, fwds[i].guest_port };
	microvm_net_config nc = MICROVM_NET_CONFIG_INIT;
	nc.flags = (cfg->flags & MICROVM_RESTORE_KEEP_MAC ? MICROVM_NET_MAC_SET : 0) |
		   (dc.link_up ? 0 : MICROVM_NET_LINK_DOWN);
	nc.backend = dc.backend;
	nc.fd = fd;
	memcpy(nc.mac, dc.mac, 6);
	nc.tap_name = dc.tap_name;
	nc.passt_path = dc.passt_path;
	nc.ports = dc.n_fwds ? ports : NULL;
	nc.n_ports = dc.n_fwds;
	r = microvm_add_net(vm, &nc);
	if (r < 0)
		return errbuf_fail(err, errlen, r, "%s", microvm_last_error(vm));
	virtio_net_flap_on_load(net_dev(vm, (uint32_t)r)->opaque);
	return 0;
}

static int net_check_overrides(const microvm_restore_config *cfg, char *err, size_t errlen)
{
	if (cfg->n_net_fds > MICROVM_RESTORE_MAX_NETS || cfg->reserved ||
	    (cfg->n_net_fds && !cfg->net_fds))
		return errbuf_fail(err, errlen, -EINVAL, "restore: %u net fds (at most %d, net_fds "
				   "not NULL, reserved 0)", cfg->n_net_fds, MICROVM_RESTORE_MAX_NETS);
	for (uint32_t i = 0; i < cfg->n_net_fds; i++)
		if (cfg->net_fds[i] < -1)
			return errbuf_fail(err, errlen, -EINVAL, "restore: net_fds[%u] = %d", i,
					   cfg->net_fds[i]);
	return 0;
}

const struct vm_kind vm_kind_net = {
	.ops = &virtio_net_ops,
	.restore_add = net_restore_add,
	.check_overrides = net_check_overrides,
};
