/* 16550A UART at COM1 (0x3f8, IRQ 4) connected to the console fds. */
#ifndef MICROVM_SERIAL_H
#define MICROVM_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_NR_PORTS 8
#define SERIAL_COM1_IRQ 4
#define SERIAL_RX_FIFO 64

struct dev_host;

struct serial {
	const struct dev_host *host;
	pthread_mutex_t lock;  /* vCPUs and the event loop touch the port */
	int out_fd;            /* borrowed, -1 = discard */
	int in_fd;             /* borrowed, -1 = no input */
	bool in_watched;       /* in_fd is in the event loop (else polled) */
	bool in_paused;        /* event loop watching paused: FIFO full */
	bool in_eof;
	struct ev_handler in_handler;
	uint8_t rx[SERIAL_RX_FIFO];
	uint32_t rx_head, rx_count;
	bool thre_pending;     /* transmitter-empty interrupt pending */
	bool irq_level;
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
};

void serial_init(void *dev, const struct dev_host *host);
void serial_set_fds(struct serial *s, int in_fd, int out_fd);
/* Hook console input into @loop (when the VM starts). 0 or -errno. */
int serial_attach(struct serial *s, struct evloop *loop);
void serial_destroy(void *dev);

struct bus_ops;
extern const struct bus_ops serial_ops;

struct st_writer;
/* Snapshot: registers, pending interrupt state and the receive FIFO. */
void serial_save(void *dev, struct st_writer *w, int node);
int serial_load(void *dev, const void *fdt, int node, char *err, size_t errlen);

#endif
