/*
 * virtio-vsock packet parsing (lib/virtio/vsock.c): the input becomes TX
 * chains (tests/fuzz/fuzz.h format: a 44-byte header and payload split and
 * flagged as the fuzzer likes) sent to an engine with RX buffers to answer
 * in (RST, RESPONSE, CREDIT_UPDATE...). The engine is stopped and started
 * between inputs, dropping its connections.
 */
#include "fuzz.h"

#include <pthread.h>

#include "evloop.h"
#include "virtio/vsock.h"

static struct guest_mem mem;
static struct fz_queue rx, tx, ev;
static struct evloop loop;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct virtio_vsock *vs;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void env_used(void *opaque, uint16_t q)
{
}

static void env_broken(void *opaque, const char *why)
{
}

static void setup(void)
{
	fz_ram(&mem, FZ_RAM);
	fz_queue_init(&rx, &mem, 0);
	fz_queue_init(&tx, &mem, 1);
	fz_queue_init(&ev, &mem, 2);
	fz_check(evloop_init_manual(&loop) == 0);
	struct vsock_env env = { .loop = &loop, .lock = &lock, .used = env_used,
				 .broken = env_broken };
	vs = virtio_vsock_new(&env, 3, NULL);
	fz_check(vs != NULL);
}

/* Device-writable buffers on the RX and event queues, high in RAM. */
static void give_rx_buffers(void)
{
	uint64_t gpa[1];
	uint32_t len[1] = { 4096 };
	bool wr[1] = { true };
	for (int i = 0; i < 8; i++) {
		gpa[0] = FZ_RAM - 0x10000 * (uint64_t)(i + 1);
		fz_add_chain(&rx, gpa, len, wr, 1);
	}
	gpa[0] = FZ_RAM - 0x100000;
	len[0] = 8;
	fz_add_chain(&ev, gpa, len, wr, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vs)
		setup();
	fz_queue_reset(&rx);
	fz_queue_reset(&tx);
	fz_queue_reset(&ev);
	give_rx_buffers();
	uint64_t heap = FZ_HEAP;
	size_t used;
	while ((used = fz_chain(&tx, &heap, data, size)) > 0)
		data += used, size -= used;
	pthread_mutex_lock(&lock);
	virtio_vsock_start(vs, &rx.q, &tx.q, &ev.q);
	virtio_vsock_notify(vs, VSOCK_TXQ);
	virtio_vsock_notify(vs, VSOCK_RXQ);
	virtio_vsock_stop(vs);
	pthread_mutex_unlock(&lock);
	return 0;
}
