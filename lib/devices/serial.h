/* 8250/16550A UART at COM1 (0x3f8). Output goes to the console fd. */
#ifndef MICROVM_SERIAL_H
#define MICROVM_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_NR_PORTS 8

struct microvm;

struct serial {
	struct microvm *vm;
	pthread_mutex_t lock; /* several vCPUs may touch the port */
	int out_fd;           /* borrowed, -1 = discard */
	int in_fd;            /* borrowed, -1 = no input; polled, see serial.c */
	bool in_eof;
	bool rx_full;
	uint8_t rx;
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
};

void serial_init(struct serial *s, struct microvm *vm, int out_fd);
void serial_destroy(struct serial *s);

struct bus_ops;
extern const struct bus_ops serial_ops;

#endif
