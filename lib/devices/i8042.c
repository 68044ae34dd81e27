#include "devices/i8042.h"
#include "snapshot/state.h"

#include <stdbool.h>
#include <string.h>

#include "bus.h"
#include "devices/host.h"
#include "microvm.h"

#define STATUS_OBF 0x01 /* output buffer full */
#define STATUS_SYS 0x04 /* system flag: self test passed */
#define STATUS_UNLOCKED 0x10 /* keyboard not inhibited (keylock off) */
#define CTR_KBD_INT 0x01
#define CTR_SYS 0x04
#define CTR_KBD_DISABLE 0x10
#define CTR_AUX_DISABLE 0x20
#define CTR_XLATE 0x40

#define CMD_READ_CTR 0x20
#define CMD_WRITE_CTR 0x60
#define CMD_AUX_DISABLE 0xa7
#define CMD_AUX_ENABLE 0xa8
#define CMD_AUX_TEST 0xa9
#define CMD_SELF_TEST 0xaa
#define CMD_KBD_TEST 0xab
#define CMD_KBD_DISABLE 0xad
#define CMD_KBD_ENABLE 0xae
#define CMD_READ_OUTPUT 0xd0
#define CMD_WRITE_OUTPUT 0xd1
#define CMD_WRITE_KBD_OUT 0xd2
#define CMD_WRITE_AUX_OUT 0xd3
#define CMD_WRITE_AUX 0xd4
#define CMD_RESET 0xfe

#define KBD_ACK 0xfa
#define KBD_RESET 0xff
#define KBD_BAT_OK 0xaa
#define KBD_GET_ID 0xf2

void i8042_init(void *dev, const struct dev_host *host)
{
	struct i8042 *k = dev;
	memset(k, 0, sizeof(*k));
	k->host = host;
	pthread_mutex_init(&k->lock, NULL);
	k->ctr = CTR_KBD_INT | CTR_SYS | CTR_XLATE;
}

void i8042_destroy(void *dev)
{
	struct i8042 *k = dev;
	pthread_mutex_destroy(&k->lock);
}

static void reset_vm(struct i8042 *k, const char *why)
{
	host_exit(k->host, MICROVM_EXIT_RESET, "guest requested reset (%s)", why);
}

/* Queue a byte for the guest to read from port 0x60 (k->lock held). */
static void push(struct i8042 *k, uint8_t v, bool from_kbd)
{
	if (k->count == I8042_QUEUE)
		return;
	k->queue[(k->head + k->count++) % I8042_QUEUE] = v;
	if (from_kbd && (k->ctr & CTR_KBD_INT)) {
		host_irq_line(k->host, I8042_KBD_IRQ, 1); /* edge */
		host_irq_line(k->host, I8042_KBD_IRQ, 0);
	}
}

static void command(struct i8042 *k, uint8_t cmd)
{
	switch (cmd) {
	case CMD_READ_CTR: push(k, k->ctr, false); break;
	case CMD_WRITE_CTR:
	case CMD_WRITE_OUTPUT:
	case CMD_WRITE_KBD_OUT:
	case CMD_WRITE_AUX_OUT:
	case CMD_WRITE_AUX: k->pending = cmd; break;
	case CMD_AUX_DISABLE: k->ctr |= CTR_AUX_DISABLE; break;
	case CMD_AUX_ENABLE: k->ctr &= (uint8_t)~CTR_AUX_DISABLE; break;
	case CMD_AUX_TEST: push(k, 0xff, false); break; /* no aux port */
	case CMD_SELF_TEST: push(k, 0x55, false); break;
	case CMD_KBD_TEST: push(k, 0x00, false); break;
	case CMD_KBD_DISABLE: k->ctr |= CTR_KBD_DISABLE; break;
	case CMD_KBD_ENABLE: k->ctr &= (uint8_t)~CTR_KBD_DISABLE; break;
	case CMD_READ_OUTPUT: push(k, 0x01, false); break; /* reset line high */
	case CMD_RESET: reset_vm(k, "i8042 command 0xfe"); break;
	default: break;
	}
}

static void data(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending;
	k->pending = 0;
	switch (cmd) {
	case CMD_WRITE_CTR: k->ctr = v; return;
	case CMD_WRITE_OUTPUT:
		if (!(v & 0x01))
			reset_vm(k, "i8042 output port reset line");
		return;
	case CMD_WRITE_KBD_OUT: push(k, v, true); return;
	case CMD_WRITE_AUX_OUT: return; /* no aux port */
	case CMD_WRITE_AUX: return;     /* no mouse: nothing answers */
	default: break;
	}
	/* A command for the keyboard itself. */
	push(k, KBD_ACK, true);
	if (v == KBD_RESET)
		push(k, KBD_BAT_OK, true);
	else if (v == KBD_GET_ID) {
		push(k, 0xab, true);
		push(k, 0x83, true);
	}
}

static void i8042_read(void *opaque, uint64_t off, void *out, uint32_t len)
{
	struct i8042 *k = opaque;
	uint8_t v = 0;
	pthread_mutex_lock(&k->lock);
	if (off == 0) {
		if (k->count) {
			v = k->queue[k->head];
			k->head = (k->head + 1) % I8042_QUEUE;
			k->count--;
		}
	} else if (off == I8042_CMD_PORT - I8042_DATA_PORT) {
		v = STATUS_SYS | STATUS_UNLOCKED | (k->count ? STATUS_OBF : 0);
	}
	pthread_mutex_unlock(&k->lock);
	memset(out, 0, len);
	*(uint8_t *)out = v;
}

static void i8042_write(void *opaque, uint64_t off, const void *in, uint32_t len)
{
	struct i8042 *k = opaque;
	uint8_t v = *(const uint8_t *)in;
	(void)len;
	pthread_mutex_lock(&k->lock);
	if (off == 0)
		data(k, v);
	else if (off == I8042_CMD_PORT - I8042_DATA_PORT)
		command(k, v);
	pthread_mutex_unlock(&k->lock);
}

const struct bus_ops i8042_ops = { i8042_read, i8042_write };

/* ---------------------------------------------------------------- snapshot */

void i8042_save(void *dev, struct st_writer *w, int node)
{
	struct i8042 *k = dev;
	pthread_mutex_lock(&k->lock);
	uint8_t regs[2] = { k->ctr, k->pending };
	uint8_t q[I8042_QUEUE];
	for (uint32_t i = 0; i < k->count; i++)
		q[i] = k->queue[(k->head + i) % I8042_QUEUE];
	st_blob(w, node, "regs", regs, sizeof(regs));
	st_blob(w, node, "queue", q, k->count);
	pthread_mutex_unlock(&k->lock);
}

int i8042_load(void *dev, const void *fdt, int node, char *err, size_t errlen)
{
	struct i8042 *k = dev;
	uint8_t regs[2];
	const void *q;
	size_t n;
	int r = st_get_blob(fdt, node, "regs", regs, sizeof(regs), err, errlen);
	if (r == 0)
		r = st_get_var(fdt, node, "queue", &q, &n, I8042_QUEUE, err, errlen);
	if (r < 0)
		return r;
	pthread_mutex_lock(&k->lock);
	k->ctr = regs[0];
	k->pending = regs[1];
	memcpy(k->queue, q, n);
	k->head = 0;
	k->count = (uint8_t)n;
	pthread_mutex_unlock(&k->lock);
	return 0;
}
