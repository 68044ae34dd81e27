/*
 * virtio-console (virtio 1.2 section 5.3) and virtio-rng (section 5.4) on the
 * virtio-mmio transport.
 *
 * The public setters microvm_set_console_type() and microvm_set_rng() only
 * record the choice; microvm_start() adds the chosen devices through their
 * kinds' start_add (lib/virtio/registry.h), at most once per VM, and the
 * console's connects the console fds to either the UART or the virtio
 * console.
 *
 * The request engines below work on a bare struct virtq, without a
 * transport, an event loop or KVM, so the unit tests can drive them over a
 * guest memory of their own.
 */
#ifndef MICROVM_VIRTIO_DEVICES_H
#define MICROVM_VIRTIO_DEVICES_H

#include <stddef.h>
#include <stdint.h>

struct dev_host;
struct virtio_device_ops;
struct virtq;
struct virtq_chain;

#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_ENTROPY 4

/* ------------------------------------------------------------- virtio-rng */

struct virtio_rng;
/* A virtio-rng device for the VM @host (borrowed), and its transport ops
 * (one row of lib/vm_devices.c). NULL if out of memory. Freed through the
 * ops' release with the VM, or virtio_rng_free() if never added. */
struct virtio_rng *virtio_rng_new(const struct dev_host *host);
void virtio_rng_free(struct virtio_rng *r);
extern const struct virtio_device_ops virtio_rng_ops;

/* Most random bytes given for one request (the rest of a larger buffer is
 * left unwritten; the used length says how much was filled). */
#define VIRTIO_RNG_MAX_REQUEST (64u * 1024u)

/*
 * Serve every available request of the requestq @q: fill the chain's
 * device-writable buffers with getrandom() bytes and push it with the number
 * of bytes written. @c is scratch space. Adds the number of chains pushed to
 * *@pushed. Returns 0 when the ring is empty; -EIO for a malformed ring or a
 * request with a device-readable buffer (the caller marks the device
 * DEVICE_NEEDS_RESET); -EAGAIN if the host's entropy pool is not
 * initialised yet (the request is left in the ring; the device retries when
 * /dev/random becomes readable); another negative errno if getrandom()
 * failed otherwise (the request is left in the ring).
 */
int virtio_rng_process(struct virtq *q, struct virtq_chain *c, uint32_t *pushed);

/* --------------------------------------------------------- virtio-console */

/* Feature bits (section 5.3.3). Only EMERG_WRITE is offered. */
#define VIRTIO_CONSOLE_F_SIZE 0
#define VIRTIO_CONSOLE_F_MULTIPORT 1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

/* Configuration layout (section 5.3.4), byte offsets. */
#define VIRTIO_CONSOLE_CFG_COLS 0         /* le16 (valid with F_SIZE) */
#define VIRTIO_CONSOLE_CFG_ROWS 2         /* le16 (valid with F_SIZE) */
#define VIRTIO_CONSOLE_CFG_MAX_NR_PORTS 4 /* le32 (valid with F_MULTIPORT) */
#define VIRTIO_CONSOLE_CFG_EMERG_WR 8     /* le32, write-only character */
#define VIRTIO_CONSOLE_CFG_SIZE 12

/* Queues of port 0 without F_MULTIPORT. */
#define VIRTIO_CONSOLE_RXQ 0 /* receiveq0: the device writes guest input */
#define VIRTIO_CONSOLE_TXQ 1 /* transmitq0: guest output */

/* Host-side output buffer: guest output accepted but not yet written to the
 * output fd. When it is full the device stops taking transmit buffers. */
#define VIRTIO_CONSOLE_TX_BUF (64u * 1024u)

/* Receive chains filled per event-loop wakeup on a pollable input fd (the
 * loop is level-triggered: it comes back for the rest). */
#define VIRTIO_CONSOLE_RX_BATCH 64u

struct virtio_console;

/* A console engine for the VM @host (borrowed; NULL: a bare engine, no
 * logging). NULL if out of memory. */
struct virtio_console *virtio_console_new(const struct dev_host *host);
/* Transport ops of the console device (one row of lib/vm_devices.c). */
extern const struct virtio_device_ops virtio_console_ops;
void virtio_console_free(struct virtio_console *c);

/*
 * Connect the engine to @in_fd/@out_fd (borrowed, -1 = none; blocking or
 * not). Forgets end-of-input, a broken output, a transmit chain in progress
 * and buffered output.
 */
void virtio_console_set_fds(struct virtio_console *c, int in_fd, int out_fd);

/* virtio_console_tx() results. */
#define VCON_TX_DONE 0    /* transmit ring empty, everything written */
#define VCON_TX_BLOCKED 1 /* the output fd is full: output is buffered and
			     the rest waits in the ring; call again when the
			     fd is writable */

/*
 * Move guest output from the transmitq @q to the output fd without ever
 * blocking: write what the fd takes now, keep at most VIRTIO_CONSOLE_TX_BUF
 * bytes buffered, and leave further chains in the ring. A chain is pushed
 * (used length 0) once all its bytes are written or buffered. With no output
 * fd, or after it broke (EPIPE...), output is discarded. @q may be NULL:
 * then only buffered output is written. Adds the chains pushed to *@pushed.
 * VCON_TX_DONE, VCON_TX_BLOCKED or -EIO (malformed ring).
 */
int virtio_console_tx(struct virtio_console *c, struct virtq *q, uint32_t *pushed);

/* Bytes of guest output buffered, not yet written. */
size_t virtio_console_tx_buffered(const struct virtio_console *c);

/* Queue one byte of emergency output (emerg_wr) behind the buffered output;
 * dropped if the buffer is full. Call virtio_console_tx() to write it. */
void virtio_console_emerg_write(struct virtio_console *c, uint8_t byte);

/* virtio_console_rx() results. */
#define VCON_RX_IDLE 0    /* no input available now: watch the fd */
#define VCON_RX_MORE 1    /* batch limit reached, input may remain */
#define VCON_RX_STARVED 2 /* input waits but the guest posted no buffer */
#define VCON_RX_EOF 3     /* no input fd, end of input or a broken fd */

/*
 * Read available input directly into the receive buffers of the receiveq
 * @q, never blocking (each read is preceded by a zero-timeout poll), one
 * read per chain, pushed with the bytes read. At most
 * VIRTIO_CONSOLE_RX_BATCH chains when @batch is set (the event loop will
 * call again), else until input or buffers run out. A chain taken when the
 * read then finds nothing is put back in the ring. Adds the chains pushed to
 * *@pushed. VCON_RX_* or -EIO (malformed ring).
 */
int virtio_console_rx(struct virtio_console *c, struct virtq *q, int batch, uint32_t *pushed);

#endif
