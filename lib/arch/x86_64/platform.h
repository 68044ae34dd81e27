/* The x86_64 platform devices every VM has (lib/arch/x86_64/platform.c). */
#ifndef MICROVM_X86_PLATFORM_H
#define MICROVM_X86_PLATFORM_H

#include "arch/x86_64/pm.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/serial.h"

struct arch_platform {
	struct serial serial; /* COM1: the console unless virtio-console has it */
	struct i8042 i8042;
	struct pm pm;
	struct rtc rtc;
};

#endif
