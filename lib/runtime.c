/* The process-wide runtime API: limits and counts of the event threads
 * (lib/evloop.c), teardown threads (lib/reaper.c) and the boot-image cache
 * (lib/image_cache.c). */
#include <errno.h>

#include "abi.h"
#include "evloop.h"
#include "image_cache.h"
#include "microvm.h"
#include "reaper.h"

#define ABI_RUNTIME_CONFIG_MIN ABI_END(microvm_runtime_config, teardown_backlog) /* 0.6 */
#define ABI_RUNTIME_STATS_MIN ABI_END(microvm_runtime_counters, teardown_pending)   /* 0.6 */

MICROVM_API int microvm_runtime_configure(const microvm_runtime_config *cfg)
{
	microvm_runtime_config c;
	char err[160];
	if (abi_copy_in(&c, sizeof(c), cfg, ABI_RUNTIME_CONFIG_MIN, "microvm_runtime_config", err,
			sizeof(err)) < 0)
		return -EINVAL;
	if (c.event_threads > 1024 || c.teardown_threads > 64 || c.teardown_backlog > (1u << 20) ||
	    (c.image_cache_mib > (1u << 20) && c.image_cache_mib != MICROVM_IMAGE_CACHE_OFF))
		return -EINVAL;
	if (c.event_threads)
		evloop_set_max_threads(c.event_threads);
	if (c.image_cache_mib)
		image_cache_set_limit(c.image_cache_mib == MICROVM_IMAGE_CACHE_OFF ? 0
										 : c.image_cache_mib);
	reaper_set_limits(c.teardown_threads, c.teardown_backlog);
	return 0;
}

MICROVM_API int microvm_runtime_stats(microvm_runtime_counters *out)
{
	char err[160];
	if (!out || abi_prepare_out(out, sizeof(*out), ABI_RUNTIME_STATS_MIN,
				    "microvm_runtime_counters", err, sizeof(err)) < 0)
		return -EINVAL;
	unsigned threads, pending;
	uint32_t files;
	uint64_t bytes;
	reaper_stats(&threads, &pending);
	image_cache_stats(&files, &bytes);
	out->event_threads = evloop_thread_count();
	out->teardown_threads = threads;
	out->teardown_pending = pending;
	if (out->size >= ABI_END(microvm_runtime_counters, image_cache_kib)) {
		out->image_cache_files = files;
		out->image_cache_kib = (uint32_t)((bytes + 1023) / 1024);
	}
	return 0;
}

MICROVM_API int microvm_teardown_wait(int timeout_ms)
{
	return timeout_ms < -1 ? -EINVAL : reaper_wait(timeout_ms);
}
