/* i8042 keyboard controller: just enough for the guest's reset (0xFE to
 * port 0x64) and for Linux's probe. */
#ifndef MICROVM_I8042_H
#define MICROVM_I8042_H

#include <stdint.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64

struct microvm;

struct i8042 {
	struct microvm *vm;
};

struct bus_ops;
extern const struct bus_ops i8042_ops; /* registered on [0x60, 0x65) */

#endif
