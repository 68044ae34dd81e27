/* MC146818 CMOS real-time clock at ports 0x70/0x71: the date and time from
 * the host clock (UTC), so kernels that probe it find a working RTC at once
 * instead of stalling. No alarms or periodic interrupts. */
#ifndef MICROVM_RTC_H
#define MICROVM_RTC_H

#include <pthread.h>
#include <stdint.h>

#define RTC_PORT 0x70
#define RTC_NR_PORTS 2

struct dev_host;

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;     /* < 128: port writes mask bit 7, rtc_load checks */
	uint8_t cmos[128]; /* battery-backed RAM: writes are kept */
};

void rtc_init(void *dev, const struct dev_host *host);
void rtc_destroy(void *dev);

struct bus_ops;
extern const struct bus_ops rtc_ops;

struct st_writer;
/* Snapshot: the index register and CMOS RAM (the clock is the host's). */
void rtc_save(void *dev, struct st_writer *w, int node);
int rtc_load(void *dev, const void *fdt, int node, char *err, size_t errlen);

#endif
