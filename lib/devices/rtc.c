#include "devices/rtc.h"
#include "snapshot/state.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "errbuf.h"

enum {
	RTC_SECONDS = 0x00,
	RTC_MINUTES = 0x02,
	RTC_HOURS = 0x04,
	RTC_DAY_OF_WEEK = 0x06,
	RTC_DAY_OF_MONTH = 0x07,
	RTC_MONTH = 0x08,
	RTC_YEAR = 0x09,
	RTC_REG_A = 0x0a,
	RTC_REG_B = 0x0b,
	RTC_REG_C = 0x0c,
	RTC_REG_D = 0x0d,
	RTC_CENTURY = 0x32,
};

#define REG_A_DEFAULT 0x26 /* 32.768 kHz time base, 1024 Hz rate, UIP clear */
#define REG_B_24H 0x02     /* 24-hour mode, BCD, no interrupts */
#define REG_B_BINARY 0x04
#define REG_D_VRT 0x80     /* valid RAM and time */

void rtc_init(void *dev, const struct dev_host *host)
{
	struct rtc *r = dev;
	(void)host;
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->cmos[RTC_REG_A] = REG_A_DEFAULT;
	r->cmos[RTC_REG_B] = REG_B_24H;
	r->cmos[RTC_REG_D] = REG_D_VRT;
}

void rtc_destroy(void *dev)
{
	struct rtc *r = dev;
	pthread_mutex_destroy(&r->lock);
}

static uint8_t encode(const struct rtc *r, int v)
{
	if (r->cmos[RTC_REG_B] & REG_B_BINARY)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_reg(struct rtc *r, uint8_t idx)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	switch (idx) {
	case RTC_SECONDS: return encode(r, tm.tm_sec);
	case RTC_MINUTES: return encode(r, tm.tm_min);
	case RTC_HOURS: return encode(r, tm.tm_hour);
	case RTC_DAY_OF_WEEK: return encode(r, tm.tm_wday + 1);
	case RTC_DAY_OF_MONTH: return encode(r, tm.tm_mday);
	case RTC_MONTH: return encode(r, tm.tm_mon + 1);
	case RTC_YEAR: return encode(r, tm.tm_year % 100);
	case RTC_CENTURY: return encode(r, (tm.tm_year + 1900) / 100);
	case RTC_REG_C: return 0; /* no interrupt flags */
	default: return r->cmos[idx];
	}
}

static void rtc_read(void *opaque, uint64_t off, void *data, uint32_t len)
{
	struct rtc *r = opaque;
	memset(data, 0, len);
	pthread_mutex_lock(&r->lock);
	*(uint8_t *)data = off == 0 ? r->index : rtc_reg(r, r->index);
	pthread_mutex_unlock(&r->lock);
}

static void rtc_write(void *opaque, uint64_t off, const void *data, uint32_t len)
{
	struct rtc *r = opaque;
	uint8_t v = *(const uint8_t *)data;
	(void)len;
	pthread_mutex_lock(&r->lock);
	if (off == 0) {
		r->index = v & 0x7f; /* bit 7 is the NMI mask */
	} else if (r->index == RTC_REG_B) {
		r->cmos[RTC_REG_B] = v & (REG_B_24H | REG_B_BINARY); /* no interrupts */
	} else if (r->index != RTC_REG_C && r->index != RTC_REG_D && r->index > RTC_YEAR &&
		   r->index != RTC_REG_A) {
		r->cmos[r->index] = v; /* setting the clock itself is ignored */
	}
	pthread_mutex_unlock(&r->lock);
}

const struct bus_ops rtc_ops = { rtc_read, rtc_write };

/* ---------------------------------------------------------------- snapshot */

void rtc_save(void *dev, struct st_writer *w, int node)
{
	struct rtc *r = dev;
	pthread_mutex_lock(&r->lock);
	st_u32(w, node, "index", r->index);
	st_blob(w, node, "cmos", r->cmos, sizeof(r->cmos));
	pthread_mutex_unlock(&r->lock);
}

int rtc_load(void *dev, const void *fdt, int node, char *err, size_t errlen)
{
	struct rtc *r = dev;
	uint32_t index;
	uint8_t cmos[sizeof(r->cmos)];
	int e = st_get_u32(fdt, node, "index", &index, err, errlen);
	if (e == 0)
		e = st_get_blob(fdt, node, "cmos", cmos, sizeof(cmos), err, errlen);
	if (e < 0)
		return e;
	/* cmos[] is indexed with it on the next port 0x71 access. */
	if (index >= sizeof(r->cmos))
		return errbuf_fail(err, errlen, -EINVAL, "state rtc/index: %u is not a CMOS "
				   "register (0..%zu)", index, sizeof(r->cmos) - 1);
	pthread_mutex_lock(&r->lock);
	r->index = (uint8_t)index;
	memcpy(r->cmos, cmos, sizeof(cmos));
	pthread_mutex_unlock(&r->lock);
	return 0;
}
