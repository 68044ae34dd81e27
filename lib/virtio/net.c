/*
 * virtio-net (virtio 1.2 section 5.1): device ID 1, receiveq1 (0) and
 * transmitq1 (1), no control queue. Offered: MAC, STATUS, MRG_RXBUF (and
 * VERSION_1, EVENT_IDX, INDIRECT_DESC from the transport); checksum and
 * segmentation offloads (CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6 and ECN) only
 * when the backend carries the virtio_net_hdr (a TAP with IFF_VNET_HDR):
 * the header then passes through unchanged. Otherwise (stream, passt, a TAP
 * without headers) the 12-byte header is stripped on transmit and a zero
 * one (no flags, GSO_NONE) is put in front of each received frame.
 *
 * Transmit runs when the driver notifies the transmitq (ioeventfd, on the
 * event loop): each chain is one frame; iovecs point straight into guest
 * memory. A chain with a device-writable buffer, only a header, a frame
 * shorter than an Ethernet header or longer than NET_MAX_FRAME, or offload
 * requests the device did not offer, is dropped (tx_malformed); so is a
 * chain whose descriptors are bad while the ring itself is sane (given back
 * unused). A frame the backend cannot take now (its fd is full) stays in the
 * ring and transmit resumes when the fd is writable; frames it rejects, or
 * any sent while the link is down or the backend is dead, are tx_dropped.
 *
 * Receive runs when the backend fd is readable and when the driver adds
 * receive buffers. One frame at a time is taken from the backend (peek),
 * copied into receive buffers (several with MRG_RXBUF, num_buffers set),
 * then consumed. With no (or not enough) buffers the frame stays in the
 * backend, the fd is no longer watched, and the driver's next receiveq
 * notification resumes: nothing is read ahead, so host buffering is the
 * backend's bounded buffer. Frames arriving while the link is down, or
 * that can never fit the posted buffers, are rx_dropped.
 *
 * A backend that dies (peer closed, passt exited) takes the link down.
 * A malformed ring sets DEVICE_NEEDS_RESET; the VM keeps running.
 */
#include "virtio/net.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "devices/host.h"
#include "errbuf.h"
#include "evloop.h"
#include "microvm.h"
#include "snapshot/state.h"
#include "virtio/mmio.h"
#include "virtio/queue.h"

#define HDR NET_VNET_HDR_LEN

#define BASE_FEATURES \
	((1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS) | \
	 (1ULL << VIRTIO_NET_F_MRG_RXBUF))
#define OFFLOAD_FEATURES \
	((1ULL << VIRTIO_NET_F_CSUM) | (1ULL << VIRTIO_NET_F_GUEST_CSUM) | \
	 (1ULL << VIRTIO_NET_F_GUEST_TSO4) | (1ULL << VIRTIO_NET_F_GUEST_TSO6) | \
	 (1ULL << VIRTIO_NET_F_GUEST_ECN) | (1ULL << VIRTIO_NET_F_HOST_TSO4) | \
	 (1ULL << VIRTIO_NET_F_HOST_TSO6) | (1ULL << VIRTIO_NET_F_HOST_ECN))

/* TUNSETOFFLOAD bits (linux/if_tun.h). */
#define TUN_F_CSUM 0x01
#define TUN_F_TSO4 0x02
#define TUN_F_TSO6 0x04
#define TUN_F_TSO_ECN 0x08

struct virtio_net {
	struct net_env env;
	struct virtio_device *vdev; /* transport glue only */
	struct net_backend *be;
	struct net_dev_config cfg;
	bool link_up;
	bool flap;                  /* report the link down once (restore) */
	bool flap_on_load;          /* a restored clone: flap at net_load */
	bool live;
	uint64_t features;          /* negotiated */
	struct virtq *rxq, *txq;
	bool rx_stalled;            /* a frame waits for receive buffers */
	bool tx_blocked;            /* the backend fd is full */
	struct ev_handler h;
	uint32_t watched;
	struct net_counters st;
	struct virtq_chain chain;   /* scratch (large) */
	struct iovec iov[VIRTQ_MAX_SIZE];
	uint16_t heads[VIRTQ_MAX_SIZE];
	uint32_t lens[VIRTQ_MAX_SIZE];
};

#define net_warn(n, ...) host_log((n)->env.host, MICROVM_LOG_WARN, __VA_ARGS__)

/* ---------------------------------------------------------- config copy */

int net_dev_config_copy(struct net_dev_config *dst, const struct net_dev_config *src)
{
	*dst = *src;
	dst->tap_name = dst->passt_path = NULL;
	dst->fwds = NULL;
	if ((src->tap_name && !(dst->tap_name = strdup(src->tap_name))) ||
	    (src->passt_path && !(dst->passt_path = strdup(src->passt_path))))
		goto fail;
	if (src->n_fwds) {
		dst->fwds = malloc(src->n_fwds * sizeof(*dst->fwds));
		if (!dst->fwds)
			goto fail;
		memcpy(dst->fwds, src->fwds, src->n_fwds * sizeof(*dst->fwds));
	}
	return 0;
fail:
	net_dev_config_clear(dst);
	return -ENOMEM;
}

void net_dev_config_clear(struct net_dev_config *c)
{
	free(c->tap_name);
	free(c->passt_path);
	free(c->fwds);
	c->tap_name = c->passt_path = NULL;
	c->fwds = NULL;
	c->n_fwds = 0;
}

/* ------------------------------------------------------------- helpers */

static bool has(const struct virtio_net *n, unsigned bit)
{
	return n->features & (1ULL << bit);
}

static void be_event(void *opaque, uint32_t events);

/* Watch the backend fd for what the device waits on now. */
static void update_watch(struct virtio_net *n)
{
	uint32_t want = 0;
	if (n->live && n->be && !n->be->dead && n->be->fd >= 0) {
		if (!n->rx_stalled)
			want |= EPOLLIN;
		if (n->tx_blocked)
			want |= EPOLLOUT;
	}
	if (want == n->watched)
		return;
	if (want == 0) {
		evloop_del(n->env.loop, &n->h); /* a hung-up fd would still wake us */
		n->watched = 0;
		return;
	}
	ev_handler_set(&n->h, n->be->fd, be_event, n);
	int r = n->watched ? evloop_mod(n->env.loop, &n->h, want)
			   : evloop_add(n->env.loop, &n->h, want);
	if (r == 0)
		n->watched = want;
	else
		net_warn(n, "virtio-net: cannot watch the backend fd: %d", r);
}

static void mark_broken(struct virtio_net *n, const char *why)
{
	n->live = false;
	update_watch(n);
	if (n->env.broken)
		n->env.broken(n->env.opaque, why);
}

static void backend_died(struct virtio_net *n, int err)
{
	if (n->link_up)
		net_warn(n, "virtio-net: %s backend closed (%d): link down",
			 net_backend_name(n->be), err);
	n->be->dead = true;
	virtio_net_set_link(n, false);
	update_watch(n);
}

/* ------------------------------------------------------------- transmit */

/* Whether chain @ch holds a frame we can send; its header is checked
 * against the offloads negotiated if the backend does not carry it. */
static bool tx_valid(struct virtio_net *n, const struct virtq_chain *ch)
{
	if (ch->n_in || ch->out_len < HDR + NET_MIN_FRAME || ch->out_len > HDR + NET_MAX_FRAME)
		return false;
	if (n->be && n->be->vnet_hdr)
		return true;
	uint8_t h[HDR];
	virtq_read(ch, 0, h, sizeof(h));
	return !(h[NET_HDR_FLAGS] & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
	       h[NET_HDR_GSO_TYPE] == VIRTIO_NET_HDR_GSO_NONE;
}

/* Send one chain. 0 (consumed: sent, dropped or malformed) or -EAGAIN. */
static int tx_one(struct virtio_net *n, const struct virtq_chain *ch)
{
	if (!tx_valid(n, ch)) {
		n->st.tx_malformed++;
		return 0;
	}
	uint64_t frame = ch->out_len - HDR;
	if (!n->link_up || !n->be || n->be->dead) {
		n->st.tx_dropped++;
		return 0;
	}
	uint32_t nout = ch->n_out < VIRTQ_MAX_SIZE ? ch->n_out : VIRTQ_MAX_SIZE;
	uint64_t skip = n->be->vnet_hdr ? 0 : HDR;
	uint32_t k = virtq_iov_slice(ch->iov, nout, skip, ch->out_len - skip, n->iov);
	int r = n->be->ops->send(n->be, n->iov, (int)k, (size_t)(ch->out_len - skip));
	if (r == -EAGAIN)
		return -EAGAIN;
	if (r < 0) {
		n->st.tx_dropped++;
		if (n->be->dead)
			backend_died(n, r);
		return 0;
	}
	n->st.tx_packets++;
	n->st.tx_bytes += frame;
	return 0;
}

/* Pop the next transmit chain, skipping (and counting) malformed ones.
 * 1, 0 (empty) or -1 (ring broken, reported). */
static int tx_pop(struct virtio_net *n, uint32_t *pushed)
{
	for (;;) {
		int r = virtq_pop_or_enable_notify(n->txq, &n->chain);
		if (r >= 0)
			return r;
		if (virtq_skip_bad_chain(n->txq) < 0) {
			mark_broken(n, "malformed transmit ring");
			return -1;
		}
		n->st.tx_malformed++;
		(*pushed)++;
	}
}

static void tx_process(struct virtio_net *n)
{
	if (!n->live || !n->txq)
		return;
	uint32_t pushed = 0;
	n->tx_blocked = false;
	for (uint32_t i = 0; !n->env.kick || i < NET_BATCH; i++) {
		if (n->be && !n->be->dead && n->be->ops->tx_pending(n->be)) {
			int f = n->be->ops->flush(n->be);
			if (f == -EAGAIN) {
				n->tx_blocked = true;
				break;
			}
			if (f < 0)
				backend_died(n, f);
		}
		int r = tx_pop(n, &pushed);
		if (r <= 0)
			goto out;
		if (tx_one(n, &n->chain) == -EAGAIN) {
			n->txq->last_avail--; /* untouched: it stays in the ring */
			n->tx_blocked = true;
			break;
		}
		if (virtq_push(n->txq, n->chain.head, 0) < 0) {
			mark_broken(n, "transmit used ring outside RAM");
			goto out;
		}
		pushed++;
	}
	if (!n->tx_blocked && n->env.kick)
		n->env.kick(n->env.opaque, NET_TXQ); /* batch done: more later */
out:
	update_watch(n);
	if (pushed && n->env.used)
		n->env.used(n->env.opaque, NET_TXQ);
}

/* -------------------------------------------------------------- receive */

#define RX_DELIVERED 0
#define RX_WAIT 1    /* not enough buffers yet: keep the frame */
#define RX_DROP 2    /* can never fit: drop it */
#define RX_BROKEN 3

/* Pop a receive chain: 1, 0 (none) or RX_BROKEN-style -1 (reported). */
static int rx_pop(struct virtio_net *n)
{
	int r = virtq_pop_or_enable_notify(n->rxq, &n->chain);
	if (r < 0 || (r > 0 && (n->chain.n_out || n->chain.in_len == 0))) {
		mark_broken(n, "receive buffer malformed or device-readable");
		return -1;
	}
	return r;
}

/* Copy [@off, @off + @len) of header + payload into chain @ch at 0. */
static uint32_t rx_fill(struct virtio_net *n, const uint8_t *hdr, const uint8_t *payload,
			uint64_t off, uint64_t len)
{
	const struct virtq_chain *ch = &n->chain;
	uint64_t w = 0;
	if (off < HDR) {
		uint64_t k = HDR - off < len ? HDR - off : len;
		w += virtq_write(ch, 0, hdr + off, k);
		off += k;
		len -= k;
	}
	if (len)
		w += virtq_write(ch, w, payload + (off - HDR), len);
	return (uint32_t)w;
}

/* Deliver header @hdr + @plen bytes of @payload into as many chains as it
 * takes (one without MRG_RXBUF). */
static int rx_deliver(struct virtio_net *n, uint8_t *hdr, const uint8_t *payload, uint64_t plen)
{
	bool mrg = has(n, VIRTIO_NET_F_MRG_RXBUF);
	uint64_t total = HDR + plen, done = 0;
	uint32_t k = 0;
	struct iovec hiov[HDR];
	uint32_t nh = 0;
	while (done < total) {
		if (k == n->rxq->size || (k && !mrg)) {
			n->rxq->last_avail -= (uint16_t)k;
			return RX_DROP; /* more than the whole ring, or one buffer */
		}
		int r = rx_pop(n);
		if (r < 0)
			return RX_BROKEN;
		if (r == 0) {
			n->rxq->last_avail -= (uint16_t)k;
			return RX_WAIT;
		}
		const struct virtq_chain *ch = &n->chain;
		uint64_t take = total - done < ch->in_len ? total - done : ch->in_len;
		if (k == 0) {
			if (take < HDR) { /* the header must fit the first buffer */
				n->rxq->last_avail--;
				return RX_DROP;
			}
			nh = virtq_iov_slice(ch->iov, ch->n_in < HDR ? ch->n_in : HDR, 0, HDR, hiov);
		}
		n->heads[k] = ch->head;
		n->lens[k] = rx_fill(n, hdr, payload, done, take);
		done += take;
		k++;
	}
	uint16_t nb = htole16((uint16_t)k);
	memcpy(hdr + NET_HDR_NUM_BUFFERS, &nb, 2);
	for (uint32_t i = 0, off = 0; i < nh; off += (uint32_t)hiov[i].iov_len, i++)
		memcpy(hiov[i].iov_base, hdr + off, hiov[i].iov_len);
	for (uint32_t i = 0; i < k; i++)
		if (virtq_push(n->rxq, n->heads[i], n->lens[i]) < 0) {
			mark_broken(n, "receive used ring outside RAM");
			return RX_BROKEN;
		}
	return RX_DELIVERED;
}

/* One frame from the backend into the guest. RX_* */
static int rx_frame(struct virtio_net *n, const uint8_t *f, size_t len)
{
	uint8_t hdr[HDR] = { 0 };
	if (n->be->vnet_hdr) {
		if (len < HDR + NET_MIN_FRAME)
			return RX_DROP;
		memcpy(hdr, f, HDR);
		f += HDR;
		len -= HDR;
	}
	if (!n->link_up)
		return RX_DROP;
	int r = rx_deliver(n, hdr, f, len);
	if (r == RX_DELIVERED) {
		n->st.rx_packets++;
		n->st.rx_bytes += len;
	}
	return r;
}

static void rx_process(struct virtio_net *n)
{
	if (!n->live || !n->rxq || !n->be || n->be->dead)
		return;
	uint32_t pushed = 0, i;
	n->rx_stalled = false;
	for (i = 0; !n->env.kick || i < NET_BATCH; i++) {
		const uint8_t *f;
		ssize_t len = n->be->ops->peek(n->be, &f);
		if (len == -EAGAIN)
			break;
		if (len < 0) {
			backend_died(n, (int)len);
			break;
		}
		int r = rx_frame(n, f, (size_t)len);
		if (r == RX_BROKEN)
			break;
		if (r == RX_WAIT) {
			n->rx_stalled = true;
			break;
		}
		if (r == RX_DROP)
			n->st.rx_dropped++;
		else
			pushed++;
		n->be->ops->consume(n->be);
	}
	if (n->env.kick && i == NET_BATCH)
		n->env.kick(n->env.opaque, NET_RXQ); /* more later */
	update_watch(n);
	if (pushed && n->env.used)
		n->env.used(n->env.opaque, NET_RXQ);
}

/* Event loop: the backend fd is ready (or the call is stale). */
static void be_event(void *opaque, uint32_t events)
{
	struct virtio_net *n = opaque;
	(void)events; /* only non-blocking attempts follow */
	pthread_mutex_lock(n->env.lock);
	if (n->live && n->watched) {
		if (n->tx_blocked)
			tx_process(n);
		if (n->watched & EPOLLIN)
			rx_process(n);
	}
	pthread_mutex_unlock(n->env.lock);
}

/* --------------------------------------------------------------- engine */

struct virtio_net *virtio_net_new(const struct net_env *env, struct net_backend *be,
				  const struct net_dev_config *cfg)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	if (!n || net_dev_config_copy(&n->cfg, cfg) < 0) {
		free(n);
		net_backend_close(be);
		return NULL;
	}
	n->env = *env;
	n->be = be;
	n->link_up = cfg->link_up;
	return n;
}

void virtio_net_free(struct virtio_net *n)
{
	if (!n)
		return;
	if (n->watched)
		evloop_del(n->env.loop, &n->h);
	net_backend_close(n->be);
	net_dev_config_clear(&n->cfg);
	free(n);
}

uint64_t virtio_net_features(const struct virtio_net *n)
{
	return BASE_FEATURES | (n->be && n->be->vnet_hdr ? OFFLOAD_FEATURES : 0);
}

static unsigned tun_offloads(const struct virtio_net *n)
{
	unsigned f = 0;
	if (has(n, VIRTIO_NET_F_GUEST_CSUM)) {
		f |= TUN_F_CSUM;
		if (has(n, VIRTIO_NET_F_GUEST_TSO4))
			f |= TUN_F_TSO4;
		if (has(n, VIRTIO_NET_F_GUEST_TSO6))
			f |= TUN_F_TSO6;
		if ((f & (TUN_F_TSO4 | TUN_F_TSO6)) && has(n, VIRTIO_NET_F_GUEST_ECN))
			f |= TUN_F_TSO_ECN;
	}
	return f;
}

void virtio_net_start(struct virtio_net *n, struct virtq *rx, struct virtq *tx,
		      uint64_t features)
{
	n->rxq = rx;
	n->txq = tx;
	n->features = features;
	n->live = true;
	n->rx_stalled = n->tx_blocked = false;
	if (n->be && net_tap_set_offload(n->be, tun_offloads(n)) < 0)
		net_warn(n, "virtio-net: TUNSETOFFLOAD failed: offloads off on the host side");
	update_watch(n);
}

void virtio_net_stop(struct virtio_net *n)
{
	n->live = false;
	n->rxq = n->txq = NULL;
	n->features = 0;
	update_watch(n);
}

void virtio_net_notify(struct virtio_net *n, uint16_t q)
{
	if (q == NET_TXQ)
		tx_process(n);
	else if (q == NET_RXQ)
		rx_process(n);
}

void virtio_net_set_link(struct virtio_net *n, bool up)
{
	if (n->link_up == up)
		return;
	n->link_up = up;
	if (n->live && has(n, VIRTIO_NET_F_STATUS) && n->env.config_changed)
		n->env.config_changed(n->env.opaque);
}

void virtio_net_counters(const struct virtio_net *n, struct net_counters *out)
{
	*out = n->st;
}

bool virtio_net_link(const struct virtio_net *n)
{
	return n->link_up;
}

const struct net_dev_config *virtio_net_config(const struct virtio_net *n)
{
	return &n->cfg;
}

const struct net_backend *virtio_net_backend(const struct virtio_net *n)
{
	return n->be;
}

uint32_t virtio_net_watched(const struct virtio_net *n)
{
	return n->watched;
}

/* The status field as the driver reads it now. A pending flap (restore)
 * shows the link down to this one read and is up again at once, with a
 * new config change: Linux reads the 2-byte status without checking the
 * config generation, so it acts on both (carrier off, then carrier on from
 * the config-change work the interrupt queues again), as if a cable were
 * pulled and put back. A driver that re-reads on a generation change just
 * sees the link up. */
static uint16_t status_read(struct virtio_net *n, uint32_t off, uint32_t len)
{
	bool covers = off < NET_CFG_STATUS + 2 && off + len > NET_CFG_STATUS;
	if (!n->flap || !covers)
		return n->link_up ? VIRTIO_NET_S_LINK_UP : 0;
	n->flap = false;
	if (n->link_up && n->env.config_changed)
		n->env.config_changed(n->env.opaque);
	return 0;
}

void virtio_net_config_read(struct virtio_net *n, uint32_t off, void *data, uint32_t len)
{
	uint8_t cfg[NET_CFG_SIZE];
	memcpy(cfg + NET_CFG_MAC, n->cfg.mac, 6);
	uint16_t status = htole16(status_read(n, off, len));
	uint16_t pairs = htole16(1);
	memcpy(cfg + NET_CFG_STATUS, &status, 2);
	memcpy(cfg + NET_CFG_MAX_VQ_PAIRS, &pairs, 2);
	if (off <= NET_CFG_SIZE && len <= NET_CFG_SIZE - off)
		memcpy(data, cfg + off, len);
}

void virtio_net_begin_flap(struct virtio_net *n)
{
	n->flap = true;
}

void virtio_net_flap_on_load(struct virtio_net *n)
{
	n->flap_on_load = true;
}

/* ------------------------------------------------------- transport glue */

static void glue_used(void *opaque, uint16_t q)
{
	virtio_notify_used(opaque, q);
}

static void glue_broken(void *opaque, const char *why)
{
	virtio_set_needs_reset(opaque, why);
}

static void glue_config_changed(void *opaque)
{
	virtio_config_changed(opaque);
}

static void glue_kick(void *opaque, uint16_t q)
{
	struct virtio_device *vdev = opaque;
	if (vdev->notify_fd[q] >= 0) {
		uint64_t one = 1;
		ssize_t w = write(vdev->notify_fd[q], &one, sizeof(one));
		(void)w; /* only fails when the counter is saturated: still pending */
	}
}

static void net_config_read(void *opaque, uint32_t off, void *data, uint32_t len)
{
	virtio_net_config_read(opaque, off, data, len);
}

static int net_activate(void *opaque, struct virtio_device *vdev)
{
	if (!vdev->queues[NET_RXQ].ready || !vdev->queues[NET_TXQ].ready)
		return -EINVAL;
	virtio_net_start(opaque, &vdev->queues[NET_RXQ], &vdev->queues[NET_TXQ],
			 vdev->driver_features);
	glue_kick(vdev, NET_RXQ); /* buffers posted before DRIVER_OK */
	glue_kick(vdev, NET_TXQ);
	return 0;
}

static void net_notify(void *opaque, struct virtio_device *vdev, uint16_t q)
{
	(void)vdev;
	virtio_net_notify(opaque, q);
}

static void net_reset(void *opaque)
{
	virtio_net_stop(opaque);
}

static void net_release(void *opaque)
{
	virtio_net_free(opaque);
}

static void net_save(void *opaque, struct st_writer *w, int node)
{
	struct virtio_net *n = opaque;
	const struct net_dev_config *c = &n->cfg;
	st_u32(w, node, "backend", c->backend);
	st_blob(w, node, "mac", c->mac, 6);
	st_u32(w, node, "link-up", n->link_up);
	if (c->tap_name)
		st_str(w, node, "tap-name", c->tap_name);
	if (c->passt_path)
		st_str(w, node, "passt-path", c->passt_path);
	uint8_t raw[NET_MAX_FWDS * 8];
	for (uint32_t i = 0; i < c->n_fwds && i < NET_MAX_FWDS; i++) {
		uint8_t *p = raw + 8 * i;
		uint32_t proto = htobe32(c->fwds[i].udp), ports;
		ports = htobe32((uint32_t)c->fwds[i].host_port << 16 | c->fwds[i].guest_port);
		memcpy(p, &proto, 4);
		memcpy(p + 4, &ports, 4);
	}
	st_blob(w, node, "port-forwards", raw, 8 * (c->n_fwds < NET_MAX_FWDS ? c->n_fwds : 0));
}

int virtio_net_config_from_state(const void *fdt, int node, struct net_dev_config *cfg,
				 struct net_port_fwd *fwds, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	uint32_t link;
	const void *raw;
	size_t len;
	int r = st_get_u32(fdt, node, "backend", &cfg->backend, err, errlen);
	if (r == 0)
		r = st_get_blob(fdt, node, "mac", cfg->mac, 6, err, errlen);
	if (r == 0)
		r = st_get_u32(fdt, node, "link-up", &link, err, errlen);
	if (r == 0)
		r = st_get_var(fdt, node, "port-forwards", &raw, &len, NET_MAX_FWDS * 8, err,
			       errlen);
	if (r < 0)
		return r;
	if (link > 1 || len % 8 || cfg->backend < NET_BE_TAP_NAME || cfg->backend > NET_BE_USER)
		return errbuf_fail(err, errlen, -EINVAL, "state: virtio-net: bad link %u, backend "
				   "%u or port-forwards length %zu", link, cfg->backend, len);
	cfg->link_up = link;
	cfg->tap_name = (char *)st_get_str(fdt, node, "tap-name");
	cfg->passt_path = (char *)st_get_str(fdt, node, "passt-path");
	cfg->n_fwds = (uint32_t)(len / 8);
	cfg->fwds = fwds;
	for (uint32_t i = 0; i < cfg->n_fwds; i++) {
		uint32_t proto, ports;
		memcpy(&proto, (const uint8_t *)raw + 8 * i, 4);
		memcpy(&ports, (const uint8_t *)raw + 8 * i + 4, 4);
		proto = be32toh(proto);
		ports = be32toh(ports);
		if (proto > 1)
			return errbuf_fail(err, errlen, -EINVAL, "state: virtio-net: bad protocol %u",
					   proto);
		fwds[i] = (struct net_port_fwd){ proto == 1, (uint16_t)(ports >> 16),
						 (uint16_t)ports };
	}
	return 0;
}

/* A restored VM: the device was built from its saved configuration (link
 * state included); counters start from zero. A new clone (not a reset) with
 * its link up gets a link flap (status_read) so that the guest sees a new
 * link: a DHCP client renews, the guest agent re-probes the device to take
 * its new MAC address. Lock held. */
static int net_load(void *opaque, struct virtio_device *vdev, const void *fdt, int node,
		    char *err, size_t errlen)
{
	struct virtio_net *n = opaque;
	uint32_t link;
	int r = st_get_u32(fdt, node, "link-up", &link, err, errlen);
	if (r < 0)
		return r;
	if (link > 1)
		return errbuf_fail(err, errlen, -EINVAL, "state: virtio-net: link-up %u", link);
	n->link_up = link && !(n->be && n->be->dead);
	if (n->flap_on_load && n->link_up &&
	    (vdev->driver_features & (1ULL << VIRTIO_NET_F_STATUS))) {
		virtio_net_begin_flap(n);
		virtio_config_changed_at_load(vdev);
	}
	n->flap_on_load = false;
	return 0;
}

const struct virtio_device_ops virtio_net_ops = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.features = BASE_FEATURES,
	.num_queues = NET_NUM_QUEUES,
	.config_size = NET_CFG_SIZE,
	.config_read = net_config_read,
	.activate = net_activate,
	.notify = net_notify,
	.reset = net_reset,
	.release = net_release,
	.save = net_save,
	.load = net_load,
};

int virtio_net_device_new(const struct dev_host *host, struct net_backend *be,
			  const struct net_dev_config *cfg, struct virtio_net **out, char *err,
			  size_t errlen)
{
	struct net_env env = {
		.host = host, .loop = host->loop, .used = glue_used, .broken = glue_broken,
		.config_changed = glue_config_changed, .kick = NULL,
	};
	struct virtio_net *n = virtio_net_new(&env, be, cfg);
	if (!n)
		return errbuf_fail(err, errlen, -ENOMEM, "virtio-net: out of memory");
	*out = n;
	return 0;
}

void virtio_net_attach(struct virtio_net *n, struct virtio_device *vdev)
{
	n->vdev = vdev;
	n->env.lock = &vdev->lock;
	n->env.opaque = vdev;
	n->env.kick = glue_kick;
}
