/*
 * virtio-net TX parsing (lib/virtio/net.c): the input becomes TX chains
 * (tests/fuzz/fuzz.h format: the 12-byte virtio_net_hdr_v1 and the frame
 * split and flagged as the fuzzer likes) sent through the stream backend to
 * a socket the harness drains (RX buffers are given too, nothing arrives).
 * First byte bit 1: VIRTIO_NET_F_MRG_RXBUF negotiated.
 */
#include "fuzz.h"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/net.h"
#include "evloop.h"
#include "virtio/net.h"

static struct guest_mem mem;
static struct fz_queue rx, tx;
static struct evloop loop;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct virtio_net *net;
static int peer = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void env_used(void *opaque, uint16_t q)
{
}

static void env_broken(void *opaque, const char *why)
{
}

static void env_config(void *opaque)
{
}

static void setup(void)
{
	fz_ram(&mem, FZ_RAM);
	fz_queue_init(&rx, &mem, 0);
	fz_queue_init(&tx, &mem, 1);
	fz_check(evloop_init_manual(&loop) == 0);
	int sv[2];
	fz_check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	peer = sv[1];
	struct net_backend *be = NULL;
	char err[256];
	fz_check(net_stream_open(sv[0], &be, err, sizeof(err)) == 0);
	struct net_env env = { .loop = &loop, .lock = &lock, .used = env_used,
			       .broken = env_broken, .config_changed = env_config };
	struct net_dev_config cfg = { .backend = NET_BE_STREAM_FD, .mac = { 2, 0, 0, 0, 0, 1 },
				      .link_up = true };
	net = virtio_net_new(&env, be, &cfg);
	fz_check(net != NULL);
}

static void drain_peer(void)
{
	static uint8_t buf[65536];
	while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!net)
		setup();
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	fz_queue_reset(&rx);
	fz_queue_reset(&tx);
	uint64_t gpa[1];
	uint32_t len[1] = { 2048 };
	bool wr[1] = { true };
	for (int i = 0; i < 8; i++) {
		gpa[0] = FZ_RAM - 0x10000 * (uint64_t)(i + 1);
		fz_add_chain(&rx, gpa, len, wr, 1);
	}
	uint64_t heap = FZ_HEAP;
	size_t used;
	const uint8_t *p = data;
	size_t left = size;
	while ((used = fz_chain(&tx, &heap, p, left)) > 0)
		p += used, left -= used;
	uint64_t features = 1ULL << VIRTIO_F_VERSION_1;
	if (mode & 2)
		features |= 1ULL << VIRTIO_NET_F_MRG_RXBUF;
	pthread_mutex_lock(&lock);
	virtio_net_start(net, &rx.q, &tx.q, features & virtio_net_features(net));
	virtio_net_notify(net, NET_TXQ);
	virtio_net_notify(net, NET_RXQ);
	virtio_net_stop(net);
	pthread_mutex_unlock(&lock);
	drain_peer();
	return 0;
}
