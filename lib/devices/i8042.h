/* i8042 keyboard controller (ports 0x60/0x64): the controller commands
 * firmware and Linux use while probing (command byte, self tests, port
 * enable/disable, output port), a keyboard that acknowledges commands, no
 * mouse, and the reset line: command 0xFE, or clearing bit 0 of the output
 * port, resets the VM. */
#ifndef MICROVM_I8042_H
#define MICROVM_I8042_H

#include <pthread.h>
#include <stdint.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64
#define I8042_KBD_IRQ 1
#define I8042_QUEUE 16

struct dev_host;

struct i8042 {
	const struct dev_host *host;
	pthread_mutex_t lock;
	uint8_t ctr;     /* controller command byte */
	uint8_t pending; /* command waiting for its data byte, or 0 */
	uint8_t queue[I8042_QUEUE];
	uint8_t head, count;
};

void i8042_init(void *dev, const struct dev_host *host);
void i8042_destroy(void *dev);

struct bus_ops;
extern const struct bus_ops i8042_ops; /* registered on [0x60, 0x65) */

struct st_writer;
/* Snapshot: command byte, pending command, output queue. */
void i8042_save(void *dev, struct st_writer *w, int node);
int i8042_load(void *dev, const void *fdt, int node, char *err, size_t errlen);

#endif
