#include "devices/i8042.h"

#include <string.h>

#include "bus.h"
#include "vm.h"

#define CMD_RESET 0xfe

static void i8042_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	(void)opaque;
	(void)off;
	/* Status: output buffer empty, input buffer empty. Data: nothing. */
	memset(data, 0, len);
}

static void i8042_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct i8042 *k = opaque;
	(void)len;
	if (off == I8042_CMD_PORT - I8042_DATA_PORT && *(const uint8_t *)data == CMD_RESET)
		vm_request_exit(k->vm, MICROVM_EXIT_RESET, 0, UINT32_MAX,
				"guest requested reset (i8042 command 0xfe)");
}

const struct bus_ops i8042_ops = { i8042_read, i8042_write };
