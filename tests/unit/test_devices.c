/*
 * Unit tests for the legacy port-I/O devices every VM has (lib/devices/):
 * the 16550A UART at 0x3f8, the i8042 at 0x60/0x64, the CMOS RTC at
 * 0x70/0x71 and the ACPI sleep control/status registers at 0x600/0x601.
 *
 * They are driven the way a vCPU would drive them, through the port-I/O bus
 * of a real VM object (microvm_create registers the devices on vm->pio), but
 * the VM is never started: /dev/kvm is not needed. Before start, interrupt
 * lines are no-ops (the serial port's computed level is still visible in
 * vm->serial.irq_level), exit requests are only recorded in vm->exit_info,
 * and the event loop does not run, so console input is read on demand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86_64/acpi.h"
#include "bus.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "arch/x86_64/platform.h"
#include "vm.h"

/* 8250 registers (offsets from 0x3f8). */
#define COM1 SERIAL_COM1_BASE
#define UART_RBR (COM1 + 0) /* THR on write, DLL with DLAB */
#define UART_IER (COM1 + 1) /* DLM with DLAB */
#define UART_IIR (COM1 + 2) /* FCR on write */
#define UART_LCR (COM1 + 3)
#define UART_MCR (COM1 + 4)
#define UART_LSR (COM1 + 5)
#define UART_MSR (COM1 + 6)
#define UART_SCR (COM1 + 7)

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO_BITS 0xc0
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

/* i8042. */
#define KBD_DATA I8042_DATA_PORT
#define KBD_STATUS I8042_CMD_PORT
#define KBD_CMD I8042_CMD_PORT
#define STATUS_OBF 0x01
#define STATUS_IBF 0x02
#define STATUS_SYS 0x04
#define STATUS_AUX 0x20
#define CTR_DEFAULT 0x45 /* KBD_INT | SYS | XLATE */

/* RTC. */
#define RTC_INDEX RTC_PORT
#define RTC_DATA (RTC_PORT + 1)

/* ---------------------------------------------------------------- helpers */

static uint8_t pio_in(struct microvm *vm, uint16_t port)
{
	uint8_t v = 0x3c; /* not what any device returns by default */
	bus_access(&vm->kvm.pio, port, &v, 1, false);
	return v;
}

static void pio_out(struct microvm *vm, uint16_t port, uint8_t v)
{
	bus_access(&vm->kvm.pio, port, &v, 1, true);
}

struct fixture {
	struct microvm *vm;
	int in[2];  /* console input: the test writes in[1] */
	int out[2]; /* console output: the test reads out[0] (non-blocking) */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (microvm_create(&f->vm) != 0)
		goto fail_free;
	if (pipe2(f->in, O_CLOEXEC) < 0)
		goto fail_vm;
	if (pipe2(f->out, O_CLOEXEC) < 0)
		goto fail_in;
	if (fcntl(f->out[0], F_SETFL, O_NONBLOCK) < 0 ||
	    microvm_set_console(f->vm, f->in[0], f->out[1]) != 0)
		goto fail_out;
	*state = f;
	return 0;
fail_out:
	close(f->out[0]);
	close(f->out[1]);
fail_in:
	close(f->in[0]);
	close(f->in[1]);
fail_vm:
	microvm_destroy(f->vm);
fail_free:
	free(f);
	return -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	microvm_destroy(f->vm);
	close(f->in[0]);
	close(f->in[1]);
	close(f->out[0]);
	close(f->out[1]);
	free(f);
	return 0;
}

/* Everything written to the console so far (non-blocking). */
static size_t drain_output(struct fixture *f, char *buf, size_t cap)
{
	size_t got = 0;
	while (got < cap) {
		ssize_t n = read(f->out[0], buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			assert_true(n < 0 && errno == EAGAIN); /* empty, never EOF */
			break;
		}
		got += (size_t)n;
	}
	return got;
}

static void assert_no_output(struct fixture *f)
{
	char buf[64];
	size_t n = drain_output(f, buf, sizeof(buf));
	if (n)
		fail_msg("%zu unexpected console byte(s), first 0x%02x", n, (uint8_t)buf[0]);
}

static void feed_input(struct fixture *f, const char *s)
{
	size_t len = strlen(s);
	assert_int_equal(write(f->in[1], s, len), (ssize_t)len);
}

static bool exit_requested(struct microvm *vm, uint32_t *reason)
{
	pthread_mutex_lock(&vm->run.lock);
	bool set = vm->run.exit_set;
	if (set && reason)
		*reason = vm->run.exit_info.reason;
	pthread_mutex_unlock(&vm->run.lock);
	return set;
}

static void assert_exit(struct microvm *vm, uint32_t expected)
{
	uint32_t reason = 0;
	if (!exit_requested(vm, &reason))
		fail_msg("no exit recorded, expected reason %u", expected);
	assert_int_equal(reason, expected);
	pthread_mutex_lock(&vm->run.lock);
	size_t msglen = strlen(vm->run.exit_info.message);
	pthread_mutex_unlock(&vm->run.lock);
	assert_true(msglen > 0);
}

static void assert_no_exit(struct microvm *vm)
{
	uint32_t reason = 0;
	if (exit_requested(vm, &reason))
		fail_msg("unexpected exit recorded (reason %u)", reason);
}

/* ================================================================= 8250 */

static void test_serial_thr_output(void **state)
{
	struct fixture *f = *state;
	const char *msg = "Hello, 8250!\r\n";
	for (const char *p = msg; *p; p++)
		pio_out(f->vm, UART_RBR, (uint8_t)*p);
	char buf[64];
	size_t n = drain_output(f, buf, sizeof(buf));
	assert_int_equal(n, strlen(msg));
	assert_memory_equal(buf, msg, n);
	/* All 256 byte values pass through untouched. */
	for (unsigned v = 0; v < 256; v++)
		pio_out(f->vm, UART_RBR, (uint8_t)v);
	uint8_t all[300];
	n = drain_output(f, (char *)all, sizeof(all));
	assert_int_equal(n, 256);
	for (unsigned v = 0; v < 256; v++)
		assert_int_equal(all[v], v);
}

static void test_serial_reset_state(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(pio_in(f->vm, UART_IER), 0);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	assert_int_equal(pio_in(f->vm, UART_LCR), 0);
	assert_int_equal(pio_in(f->vm, UART_MCR), MCR_OUT2);
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_THRE | LSR_TEMT);
	assert_int_equal(pio_in(f->vm, UART_MSR), 0xb0); /* DCD | DSR | CTS */
	assert_false(f->vm->dev.platform->serial.irq_level);
}

static void test_serial_lsr(void **state)
{
	struct fixture *f = *state;
	/* Transmit is immediate: always empty, before and after sending. */
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_THRE | LSR_TEMT);
	pio_out(f->vm, UART_RBR, 'x');
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_THRE | LSR_TEMT);
	char c;
	assert_int_equal(drain_output(f, &c, 1), 1);
	assert_int_equal(c, 'x');
	/* Writes to LSR/MSR are ignored. */
	pio_out(f->vm, UART_LSR, 0x00);
	pio_out(f->vm, UART_MSR, 0x00);
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_THRE | LSR_TEMT);
	assert_int_equal(pio_in(f->vm, UART_MSR), 0xb0);
}

static void test_serial_divisor_latch(void **state)
{
	struct fixture *f = *state;
	pio_out(f->vm, UART_IER, 0);
	pio_out(f->vm, UART_LCR, LCR_DLAB | LCR_8N1);
	assert_int_equal(pio_in(f->vm, UART_LCR), LCR_DLAB | LCR_8N1);
	assert_int_equal(pio_in(f->vm, UART_RBR), 0x0c); /* reset divisor: 9600 baud */
	assert_int_equal(pio_in(f->vm, UART_IER), 0x00);
	pio_out(f->vm, UART_RBR, 0x01); /* DLL: 115200 baud */
	pio_out(f->vm, UART_IER, 0x5a); /* DLM */
	assert_int_equal(pio_in(f->vm, UART_RBR), 0x01);
	assert_int_equal(pio_in(f->vm, UART_IER), 0x5a);
	pio_out(f->vm, UART_LCR, LCR_8N1);
	assert_int_equal(pio_in(f->vm, UART_LCR), LCR_8N1);
	/* The latch is hidden again: IER is IER (DLM did not leak into it). */
	assert_int_equal(pio_in(f->vm, UART_IER), 0x00);
	assert_false(f->vm->dev.platform->serial.irq_level);
	/* Programming the divisor sent nothing. */
	assert_no_output(f);
	/* Writing IER now leaves DLM alone. */
	pio_out(f->vm, UART_IER, IER_RDI);
	pio_out(f->vm, UART_LCR, LCR_DLAB | LCR_8N1);
	assert_int_equal(pio_in(f->vm, UART_IER), 0x5a);
	assert_int_equal(pio_in(f->vm, UART_RBR), 0x01);
	pio_out(f->vm, UART_LCR, LCR_8N1);
	assert_int_equal(pio_in(f->vm, UART_IER), IER_RDI);
	/* And data written now goes out. */
	pio_out(f->vm, UART_RBR, 'k');
	char c;
	assert_int_equal(drain_output(f, &c, 1), 1);
	assert_int_equal(c, 'k');
}

static void test_serial_scratch(void **state)
{
	struct fixture *f = *state;
	static const uint8_t vals[] = { 0x00, 0x5a, 0xa5, 0xff, 0x01 };
	for (size_t i = 0; i < sizeof(vals); i++) {
		pio_out(f->vm, UART_SCR, vals[i]);
		assert_int_equal(pio_in(f->vm, UART_SCR), vals[i]);
	}
	assert_no_output(f);
}

static void test_serial_thri(void **state)
{
	struct fixture *f = *state;
	struct serial *s = &f->vm->dev.platform->serial;
	/* No interrupt enabled: nothing pending. */
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	assert_false(s->irq_level);

	/* Enabling THRI with the transmitter empty raises it... */
	pio_out(f->vm, UART_IER, IER_THRI);
	assert_int_equal(pio_in(f->vm, UART_IER), IER_THRI);
	assert_true(s->irq_level);
	/* ... once: reading IIR reports and clears it. */
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_THRI);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	assert_false(s->irq_level);

	/* Rewriting the same IER does not raise it again. */
	pio_out(f->vm, UART_IER, IER_THRI);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);

	/* Sending a byte empties the transmitter again: THRI is back. */
	pio_out(f->vm, UART_RBR, 'z');
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_THRI);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);

	/* Pending but disabled: no line, no IIR report. */
	pio_out(f->vm, UART_RBR, 'y');
	assert_true(s->irq_level);
	pio_out(f->vm, UART_IER, 0);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	/* Enabling it again raises it again (transmitter empty). */
	pio_out(f->vm, UART_IER, IER_THRI);
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_THRI);
	assert_false(s->irq_level);

	char buf[4];
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "zy", 2);
}

static void test_serial_receive_polled(void **state)
{
	struct fixture *f = *state;
	/* Nothing yet. */
	assert_int_equal(pio_in(f->vm, UART_LSR) & LSR_DR, 0);
	assert_int_equal(pio_in(f->vm, UART_RBR), 0);

	feed_input(f, "ab");
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_DR | LSR_THRE | LSR_TEMT);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'a');
	assert_int_equal(pio_in(f->vm, UART_LSR) & LSR_DR, LSR_DR);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'b');
	assert_int_equal(pio_in(f->vm, UART_LSR), LSR_THRE | LSR_TEMT);
	assert_int_equal(pio_in(f->vm, UART_RBR), 0);

	/* More input later is picked up too, in order. */
	feed_input(f, "xyz");
	char got[4] = "";
	for (int i = 0; i < 3; i++) {
		assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
		got[i] = (char)pio_in(f->vm, UART_RBR);
	}
	assert_string_equal(got, "xyz");
	assert_int_equal(pio_in(f->vm, UART_LSR) & LSR_DR, 0);
	/* Receiving does not echo. */
	assert_no_output(f);
}

static void test_serial_receive_more_than_fifo(void **state)
{
	struct fixture *f = *state;
	char in[SERIAL_RX_FIFO * 2 + 10];
	for (size_t i = 0; i < sizeof(in) - 1; i++)
		in[i] = (char)('!' + i % 90);
	in[sizeof(in) - 1] = '\0';
	feed_input(f, in);
	size_t n = 0;
	while (n < sizeof(in) && (pio_in(f->vm, UART_LSR) & LSR_DR)) {
		char c = (char)pio_in(f->vm, UART_RBR);
		if (c != in[n])
			fail_msg("byte %zu is 0x%02x, expected 0x%02x", n, (uint8_t)c,
				 (uint8_t)in[n]);
		n++;
	}
	assert_int_equal(n, strlen(in));
}

static void test_serial_receive_interrupt(void **state)
{
	struct fixture *f = *state;
	struct serial *s = &f->vm->dev.platform->serial;
	pio_out(f->vm, UART_IER, IER_RDI);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);

	feed_input(f, "q");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR); /* polled in */
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_RDI);
	/* Reading IIR does not clear a data interrupt; reading the data does. */
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_RDI);
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'q');
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);

	/* Received data outranks the transmitter-empty interrupt. */
	feed_input(f, "r");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
	pio_out(f->vm, UART_IER, IER_RDI | IER_THRI);
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_RDI);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'r');
	assert_true(s->irq_level); /* THRI still pending */
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_THRI);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);

	/* Data pending with RDI disabled raises nothing. */
	pio_out(f->vm, UART_IER, 0);
	feed_input(f, "s");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
	assert_false(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	/* Enabling RDI with data waiting raises it at once. */
	pio_out(f->vm, UART_IER, IER_RDI);
	assert_true(s->irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_RDI);
	assert_int_equal(pio_in(f->vm, UART_RBR), 's');
	assert_false(s->irq_level);
}

static void test_serial_fcr(void **state)
{
	struct fixture *f = *state;
	/* FIFOs enabled: IIR says so in bits 6-7. */
	pio_out(f->vm, UART_IIR, 0x01);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_FIFO_BITS | IIR_NO_INT);

	feed_input(f, "hello");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'h');
	/* Clear the receive FIFO: the rest of "hello" is gone. */
	pio_out(f->vm, UART_IIR, 0x01 | 0x02);
	assert_int_equal(pio_in(f->vm, UART_LSR) & LSR_DR, 0);
	assert_int_equal(pio_in(f->vm, UART_RBR), 0);
	assert_int_equal(f->vm->dev.platform->serial.rx_count, 0);
	/* And the port still receives afterwards. */
	feed_input(f, "w");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
	assert_int_equal(pio_in(f->vm, UART_RBR), 'w');

	/* Clearing with an RDI pending drops the interrupt. */
	pio_out(f->vm, UART_IER, IER_RDI);
	feed_input(f, "v");
	assert_true(pio_in(f->vm, UART_LSR) & LSR_DR);
	assert_true(f->vm->dev.platform->serial.irq_level);
	pio_out(f->vm, UART_IIR, 0x01 | 0x02);
	assert_false(f->vm->dev.platform->serial.irq_level);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_FIFO_BITS | IIR_NO_INT);

	/* FIFOs disabled: plain 8250 IIR again. */
	pio_out(f->vm, UART_IIR, 0x00);
	assert_int_equal(pio_in(f->vm, UART_IIR), IIR_NO_INT);
	assert_no_output(f);
}

static void test_serial_loopback(void **state)
{
	struct fixture *f = *state;
	pio_out(f->vm, UART_MCR, MCR_LOOP | MCR_OUT2);
	assert_int_equal(pio_in(f->vm, UART_MCR), MCR_LOOP | MCR_OUT2);
	assert_int_equal(pio_in(f->vm, UART_MSR), 0); /* modem lines looped back: low */
	for (int i = 0; i < 10; i++)
		pio_out(f->vm, UART_RBR, (uint8_t)('0' + i));
	assert_no_output(f);
	/* Still "transmitted": the transmitter is empty. */
	assert_int_equal(pio_in(f->vm, UART_LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);

	pio_out(f->vm, UART_MCR, MCR_OUT2);
	assert_int_equal(pio_in(f->vm, UART_MSR), 0xb0);
	pio_out(f->vm, UART_RBR, 'y');
	char buf[16];
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'y');

	/* MCR keeps its 5 defined bits only. */
	pio_out(f->vm, UART_MCR, 0xff);
	assert_int_equal(pio_in(f->vm, UART_MCR), 0x1f);
	pio_out(f->vm, UART_RBR, 'n');
	assert_no_output(f);
}

static void test_serial_no_console(void **state)
{
	struct microvm *vm = NULL;
	assert_int_equal(microvm_create(&vm), 0);
	/* No fds: output is dropped, input never arrives, nothing blocks. */
	for (int i = 0; i < 100; i++)
		pio_out(vm, UART_RBR, 'x');
	assert_int_equal(pio_in(vm, UART_LSR), LSR_THRE | LSR_TEMT);
	assert_int_equal(pio_in(vm, UART_RBR), 0);
	pio_out(vm, UART_IER, IER_RDI);
	assert_int_equal(pio_in(vm, UART_IIR), IIR_NO_INT);
	assert_false(vm->dev.platform->serial.irq_level);
	microvm_destroy(vm);
}

/* ================================================================ i8042 */

/* Status register: SYS always set, the input buffer always free (writes
 * are taken at once), no mouse data, OBF as @full says. Other bits (e.g.
 * keylock) are not the tests' business. */
static void assert_kbd_status(struct microvm *vm, bool full)
{
	uint8_t st = pio_in(vm, KBD_STATUS);
	uint8_t want = STATUS_SYS | (full ? STATUS_OBF : 0);
	if ((st & (STATUS_OBF | STATUS_IBF | STATUS_SYS | STATUS_AUX)) != want)
		fail_msg("i8042 status 0x%02x, expected SYS%s, no IBF/AUX", st,
			 full ? " + OBF" : ", no OBF");
}

static void expect_bytes(struct microvm *vm, const uint8_t *bytes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		assert_kbd_status(vm, true);
		uint8_t v = pio_in(vm, KBD_DATA);
		if (v != bytes[i])
			fail_msg("byte %zu: 0x%02x, expected 0x%02x", i, v, bytes[i]);
	}
	assert_kbd_status(vm, false); /* all consumed */
}

static void test_i8042_initial_status(void **state)
{
	struct fixture *f = *state;
	assert_kbd_status(f->vm, false);
	/* Reading an empty output buffer gives 0 and changes nothing. */
	assert_int_equal(pio_in(f->vm, KBD_DATA), 0);
	assert_kbd_status(f->vm, false);
	assert_no_exit(f->vm);
}

static void test_i8042_command_byte(void **state)
{
	struct fixture *f = *state;
	pio_out(f->vm, KBD_CMD, 0x20);
	assert_kbd_status(f->vm, true);
	assert_int_equal(pio_in(f->vm, KBD_DATA), CTR_DEFAULT);
	assert_kbd_status(f->vm, false);

	/* 0x60 + data writes it; the data byte is not a keyboard command. */
	pio_out(f->vm, KBD_CMD, 0x60);
	pio_out(f->vm, KBD_DATA, 0x65);
	assert_kbd_status(f->vm, false);
	pio_out(f->vm, KBD_CMD, 0x20);
	expect_bytes(f->vm, (const uint8_t[]){ 0x65 }, 1);

	/* Port enable/disable commands flip their command-byte bits. */
	pio_out(f->vm, KBD_CMD, 0xad); /* disable keyboard */
	pio_out(f->vm, KBD_CMD, 0xa7); /* disable aux */
	pio_out(f->vm, KBD_CMD, 0x20);
	expect_bytes(f->vm, (const uint8_t[]){ 0x65 | 0x10 | 0x20 }, 1);
	pio_out(f->vm, KBD_CMD, 0xae);
	pio_out(f->vm, KBD_CMD, 0xa8);
	pio_out(f->vm, KBD_CMD, 0x20);
	expect_bytes(f->vm, (const uint8_t[]){ 0x65 & ~0x30 }, 1);
	assert_no_exit(f->vm);
}

static void test_i8042_self_tests(void **state)
{
	struct fixture *f = *state;
	pio_out(f->vm, KBD_CMD, 0xaa); /* controller self test */
	expect_bytes(f->vm, (const uint8_t[]){ 0x55 }, 1);
	pio_out(f->vm, KBD_CMD, 0xab); /* keyboard interface test */
	expect_bytes(f->vm, (const uint8_t[]){ 0x00 }, 1);
	pio_out(f->vm, KBD_CMD, 0xa9); /* aux interface test: no aux port */
	expect_bytes(f->vm, (const uint8_t[]){ 0xff }, 1);
	pio_out(f->vm, KBD_CMD, 0xd0); /* read output port: reset line high */
	expect_bytes(f->vm, (const uint8_t[]){ 0x01 }, 1);
	/* Several answers queue in order. */
	pio_out(f->vm, KBD_CMD, 0xaa);
	pio_out(f->vm, KBD_CMD, 0xab);
	pio_out(f->vm, KBD_CMD, 0xa9);
	expect_bytes(f->vm, (const uint8_t[]){ 0x55, 0x00, 0xff }, 3);
	/* Unknown commands are ignored. */
	pio_out(f->vm, KBD_CMD, 0xc0);
	pio_out(f->vm, KBD_CMD, 0x00);
	assert_kbd_status(f->vm, false);
	assert_no_exit(f->vm);
}

static void test_i8042_keyboard_commands(void **state)
{
	struct fixture *f = *state;
	pio_out(f->vm, KBD_DATA, 0xff); /* reset */
	expect_bytes(f->vm, (const uint8_t[]){ 0xfa, 0xaa }, 2);
	pio_out(f->vm, KBD_DATA, 0xf2); /* identify: MF2 keyboard */
	expect_bytes(f->vm, (const uint8_t[]){ 0xfa, 0xab, 0x83 }, 3);
	pio_out(f->vm, KBD_DATA, 0xf4); /* enable scanning: just an ACK */
	expect_bytes(f->vm, (const uint8_t[]){ 0xfa }, 1);

	/* 0xd2: the next byte appears as if the keyboard sent it. */
	pio_out(f->vm, KBD_CMD, 0xd2);
	pio_out(f->vm, KBD_DATA, 0x42);
	expect_bytes(f->vm, (const uint8_t[]){ 0x42 }, 1);
	/* 0xd3/0xd4 (aux): nothing answers, and the byte is not a keyboard
	 * command. */
	pio_out(f->vm, KBD_CMD, 0xd4);
	pio_out(f->vm, KBD_DATA, 0xff);
	pio_out(f->vm, KBD_CMD, 0xd3);
	pio_out(f->vm, KBD_DATA, 0x12);
	assert_kbd_status(f->vm, false);
	assert_no_exit(f->vm);
}

static void test_i8042_queue_overflow(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < 3 * I8042_QUEUE; i++)
		pio_out(f->vm, KBD_CMD, 0xaa);
	assert_int_equal(f->vm->dev.platform->i8042.count, I8042_QUEUE);
	uint8_t expect[I8042_QUEUE];
	memset(expect, 0x55, sizeof(expect));
	expect_bytes(f->vm, expect, I8042_QUEUE);
	assert_int_equal(pio_in(f->vm, KBD_DATA), 0);

	/* Wrapping around the ring keeps the order; the overflow is dropped. */
	for (int i = 0; i < 10; i++)
		pio_out(f->vm, KBD_CMD, 0xaa);
	for (int i = 0; i < 5; i++)
		assert_int_equal(pio_in(f->vm, KBD_DATA), 0x55);
	for (int i = 0; i < 10; i++)
		pio_out(f->vm, KBD_CMD, 0xab);
	pio_out(f->vm, KBD_CMD, 0xa9);
	pio_out(f->vm, KBD_DATA, 0xf2); /* three more bytes: none fit */
	assert_int_equal(f->vm->dev.platform->i8042.count, I8042_QUEUE);
	uint8_t expect2[I8042_QUEUE];
	memset(expect2, 0x55, 5);
	memset(expect2 + 5, 0x00, 10);
	expect2[15] = 0xff;
	expect_bytes(f->vm, expect2, I8042_QUEUE);
	assert_no_exit(f->vm);
}

static void test_i8042_reset_command(void **state)
{
	struct fixture *f = *state;
	assert_no_exit(f->vm);
	pio_out(f->vm, KBD_CMD, 0xfe);
	assert_exit(f->vm, MICROVM_EXIT_RESET);
}

static void test_i8042_output_port_reset(void **state)
{
	struct microvm *vm = NULL;
	/* Bit 0 of the output port is the reset line: clearing it resets. */
	static const uint8_t clear[] = { 0x00, 0xfe, 0x02 };
	for (size_t i = 0; i < sizeof(clear); i++) {
		assert_int_equal(microvm_create(&vm), 0);
		pio_out(vm, KBD_CMD, 0xd1);
		assert_no_exit(vm);
		pio_out(vm, KBD_DATA, clear[i]);
		assert_exit(vm, MICROVM_EXIT_RESET);
		microvm_destroy(vm);
	}
	/* Bit 0 set: nothing happens, and no keyboard ACK is queued. */
	static const uint8_t set[] = { 0x01, 0xff, 0xdf };
	for (size_t i = 0; i < sizeof(set); i++) {
		assert_int_equal(microvm_create(&vm), 0);
		pio_out(vm, KBD_CMD, 0xd1);
		pio_out(vm, KBD_DATA, set[i]);
		assert_no_exit(vm);
		assert_kbd_status(vm, false);
		/* The data byte after it is a keyboard command again. */
		pio_out(vm, KBD_DATA, 0xf4);
		expect_bytes(vm, (const uint8_t[]){ 0xfa }, 1);
		assert_no_exit(vm);
		microvm_destroy(vm);
	}
}

/* ================================================================== RTC */

static uint8_t cmos_read(struct microvm *vm, uint8_t index)
{
	pio_out(vm, RTC_INDEX, index);
	return pio_in(vm, RTC_DATA);
}

static void cmos_write(struct microvm *vm, uint8_t index, uint8_t v)
{
	pio_out(vm, RTC_INDEX, index);
	pio_out(vm, RTC_DATA, v);
}

static int from_bcd(uint8_t v)
{
	if ((v & 0x0f) > 9 || (v >> 4) > 9)
		fail_msg("0x%02x is not BCD", v);
	return (v >> 4) * 10 + (v & 0x0f);
}

struct rtc_time {
	int sec, min, hour, wday, mday, mon, year, century;
};

/* Read the clock registers; the host time before and after goes to @t0/@t1. */
static struct rtc_time read_rtc(struct microvm *vm, bool bcd, time_t *t0, time_t *t1)
{
	static const uint8_t idx[8] = { 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32 };
	int v[8];
	*t0 = time(NULL);
	for (int i = 0; i < 8; i++) {
		uint8_t raw = cmos_read(vm, idx[i]);
		v[i] = bcd ? from_bcd(raw) : raw;
	}
	*t1 = time(NULL);
	struct rtc_time t = { v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7] };
	return t;
}

static void check_rtc_time(struct microvm *vm, bool bcd)
{
	struct rtc_time t;
	time_t t0 = 0, t1 = 0;
	/* Retry until all registers were read within one host second. */
	for (int tries = 0; tries < 10; tries++) {
		t = read_rtc(vm, bcd, &t0, &t1);
		if (t0 == t1)
			break;
	}
	struct tm now;
	gmtime_r(&t0, &now);
	if (t0 == t1) {
		assert_int_equal(t.sec, now.tm_sec);
		assert_int_equal(t.min, now.tm_min);
		assert_int_equal(t.hour, now.tm_hour);
		assert_int_equal(t.wday, now.tm_wday + 1);
		assert_int_equal(t.mday, now.tm_mday);
		assert_int_equal(t.mon, now.tm_mon + 1);
		assert_int_equal(t.year, now.tm_year % 100);
		assert_int_equal(t.century, (now.tm_year + 1900) / 100);
		return;
	}
	/* The host clock kept ticking across reads: compare within seconds. */
	struct tm rt;
	memset(&rt, 0, sizeof(rt));
	rt.tm_sec = t.sec;
	rt.tm_min = t.min;
	rt.tm_hour = t.hour;
	rt.tm_mday = t.mday;
	rt.tm_mon = t.mon - 1;
	rt.tm_year = t.century * 100 + t.year - 1900;
	time_t rtc = timegm(&rt);
	if (rtc < t0 - 3 || rtc > t1 + 3)
		fail_msg("RTC time %lld is not within [%lld, %lld]", (long long)rtc,
			 (long long)t0 - 3, (long long)t1 + 3);
}

static void test_rtc_defaults(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(cmos_read(f->vm, 0x0a), 0x26); /* UIP clear, 32 kHz base */
	assert_int_equal(cmos_read(f->vm, 0x0b), 0x02); /* 24h, BCD */
	assert_int_equal(cmos_read(f->vm, 0x0c), 0x00); /* no interrupt flags */
	assert_int_equal(cmos_read(f->vm, 0x0d), 0x80); /* valid RAM and time */
	/* The index port reads back the index. */
	pio_out(f->vm, RTC_INDEX, 0x0b);
	assert_int_equal(pio_in(f->vm, RTC_INDEX), 0x0b);
}

static void test_rtc_time_bcd(void **state)
{
	struct fixture *f = *state;
	check_rtc_time(f->vm, true);
}

static void test_rtc_time_binary(void **state)
{
	struct fixture *f = *state;
	cmos_write(f->vm, 0x0b, 0x02 | 0x04);
	assert_int_equal(cmos_read(f->vm, 0x0b), 0x06);
	check_rtc_time(f->vm, false);
	/* A register whose BCD and binary forms differ, to be sure. */
	assert_int_equal(cmos_read(f->vm, 0x32), 20); /* 21st century, binary */

	/* Interrupt-enable bits in REG_B are not kept (no RTC interrupts). */
	cmos_write(f->vm, 0x0b, 0xff);
	assert_int_equal(cmos_read(f->vm, 0x0b), 0x06);

	cmos_write(f->vm, 0x0b, 0x02);
	assert_int_equal(cmos_read(f->vm, 0x32), 0x20); /* BCD again */
	check_rtc_time(f->vm, true);
}

static void test_rtc_cmos_ram(void **state)
{
	struct fixture *f = *state;
	static const uint8_t idx[] = { 0x0e, 0x10, 0x31, 0x40, 0x5a, 0x7f };
	for (size_t i = 0; i < sizeof(idx); i++)
		cmos_write(f->vm, idx[i], (uint8_t)(0xa0 + i));
	for (size_t i = 0; i < sizeof(idx); i++)
		assert_int_equal(cmos_read(f->vm, idx[i]), 0xa0 + i);
	cmos_write(f->vm, 0x40, 0x00);
	assert_int_equal(cmos_read(f->vm, 0x40), 0x00);

	/* Clock and status registers cannot be overwritten. */
	cmos_write(f->vm, 0x0a, 0x00);
	cmos_write(f->vm, 0x0c, 0xff);
	cmos_write(f->vm, 0x0d, 0x00);
	assert_int_equal(cmos_read(f->vm, 0x0a), 0x26);
	assert_int_equal(cmos_read(f->vm, 0x0c), 0x00);
	assert_int_equal(cmos_read(f->vm, 0x0d), 0x80);
	cmos_write(f->vm, 0x09, 0x99); /* year 99 */
	cmos_write(f->vm, 0x32, 0x19); /* century 19 */
	check_rtc_time(f->vm, true);
}

static void test_rtc_index_masks_nmi_bit(void **state)
{
	struct fixture *f = *state;
	cmos_write(f->vm, 0x40, 0x77);
	/* Bit 7 of the index is the NMI mask, not part of the index. */
	pio_out(f->vm, RTC_INDEX, 0x80 | 0x40);
	assert_int_equal(pio_in(f->vm, RTC_INDEX), 0x40);
	assert_int_equal(pio_in(f->vm, RTC_DATA), 0x77);
	pio_out(f->vm, RTC_DATA, 0x78); /* writes go to 0x40 too */
	assert_int_equal(cmos_read(f->vm, 0x40), 0x78);
	pio_out(f->vm, RTC_INDEX, 0x80 | 0x0d);
	assert_int_equal(pio_in(f->vm, RTC_DATA), 0x80);
	pio_out(f->vm, RTC_INDEX, 0xff);
	assert_int_equal(pio_in(f->vm, RTC_INDEX), 0x7f);
}

/* =============================================================== ACPI PM */

static void test_pm_poweroff(void **state)
{
	struct fixture *f = *state;
	uint8_t v = (ACPI_SLP_TYP_S5 << ACPI_SLP_TYP_SHIFT) | ACPI_SLP_EN;
	assert_int_equal(v, 0x34);
	assert_no_exit(f->vm);
	pio_out(f->vm, ACPI_SLEEP_CONTROL_PORT, v);
	assert_exit(f->vm, MICROVM_EXIT_POWEROFF);
}

static void test_pm_other_writes(void **state)
{
	struct fixture *f = *state;
	static const uint8_t ctl[] = {
		0x00,
		ACPI_SLP_EN,                                   /* SLP_EN without S5 */
		ACPI_SLP_TYP_S5 << ACPI_SLP_TYP_SHIFT,         /* S5 without SLP_EN */
		(3 << ACPI_SLP_TYP_SHIFT) | ACPI_SLP_EN,       /* S3 */
		(4 << ACPI_SLP_TYP_SHIFT) | ACPI_SLP_EN,       /* S4 */
		(7 << ACPI_SLP_TYP_SHIFT) | ACPI_SLP_EN,
		0xff & ~ACPI_SLP_EN,
	};
	for (size_t i = 0; i < sizeof(ctl); i++) {
		pio_out(f->vm, ACPI_SLEEP_CONTROL_PORT, ctl[i]);
		assert_no_exit(f->vm);
	}
	/* The S5 value written to the status register is just a status write. */
	pio_out(f->vm, ACPI_SLEEP_STATUS_PORT, 0x34);
	pio_out(f->vm, ACPI_SLEEP_STATUS_PORT, ACPI_WAK_STS);
	assert_no_exit(f->vm);
}

static void test_pm_reads(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(pio_in(f->vm, ACPI_SLEEP_CONTROL_PORT), 0);
	assert_int_equal(pio_in(f->vm, ACPI_SLEEP_STATUS_PORT), 0);
	uint16_t w = 0xbeef;
	assert_true(bus_access(&f->vm->kvm.pio, ACPI_SLEEP_CONTROL_PORT, &w, 2, false));
	assert_int_equal(w, 0);
	/* Still 0 after a write that does nothing. */
	pio_out(f->vm, ACPI_SLEEP_CONTROL_PORT, ACPI_SLP_EN);
	assert_int_equal(pio_in(f->vm, ACPI_SLEEP_CONTROL_PORT), 0);
	assert_no_exit(f->vm);
}

/* ============================================================ unclaimed */

static void test_unclaimed_ports(void **state)
{
	struct fixture *f = *state;
	static const uint16_t ports[] = { 0x00, 0x20, 0x5f, 0x65, 0x6f, 0x72, 0x80,
					  0x2f8, 0x3f7, 0x400, 0x5ff, 0x602, 0xcfc, 0xffff };
	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		uint8_t b = 0;
		assert_false(bus_access(&f->vm->kvm.pio, ports[i], &b, 1, false));
		if (b != 0xff)
			fail_msg("port 0x%x read 0x%02x", ports[i], b);
		uint8_t w = 0x12;
		assert_false(bus_access(&f->vm->kvm.pio, ports[i], &w, 1, true));
	}
	uint32_t d = 0;
	assert_false(bus_access(&f->vm->kvm.pio, 0xcf8, &d, 4, false));
	assert_int_equal(d, 0xffffffffU);
	/* An access running off the end of a device is not the device's. */
	uint16_t w = 0;
	assert_false(bus_access(&f->vm->kvm.pio, COM1 + 7, &w, 2, false));
	assert_int_equal(w, 0xffff);
	w = 0;
	assert_false(bus_access(&f->vm->kvm.pio, ACPI_SLEEP_STATUS_PORT, &w, 2, false));
	assert_int_equal(w, 0xffff);
	/* Nothing reacted. */
	assert_no_output(f);
	assert_no_exit(f->vm);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_serial_thr_output),
		T(test_serial_reset_state),
		T(test_serial_lsr),
		T(test_serial_divisor_latch),
		T(test_serial_scratch),
		T(test_serial_thri),
		T(test_serial_receive_polled),
		T(test_serial_receive_more_than_fifo),
		T(test_serial_receive_interrupt),
		T(test_serial_fcr),
		T(test_serial_loopback),
		cmocka_unit_test(test_serial_no_console),
		T(test_i8042_initial_status),
		T(test_i8042_command_byte),
		T(test_i8042_self_tests),
		T(test_i8042_keyboard_commands),
		T(test_i8042_queue_overflow),
		T(test_i8042_reset_command),
		cmocka_unit_test(test_i8042_output_port_reset),
		T(test_rtc_defaults),
		T(test_rtc_time_bcd),
		T(test_rtc_time_binary),
		T(test_rtc_cmos_ram),
		T(test_rtc_index_masks_nmi_bit),
		T(test_pm_poweroff),
		T(test_pm_other_writes),
		T(test_pm_reads),
		T(test_unclaimed_ports),
	};
	return cmocka_run_group_tests_name("devices", tests, NULL, NULL);
}
