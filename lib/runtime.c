/* The process-wide runtime API: limits and counts of the event threads
 * (lib/evloop.c) and teardown threads (lib/reaper.c). */
#include <errno.h>

#include "abi.h"
#include "evloop.h"
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
	if (c.event_threads > 1024 || c.teardown_threads > 64 || c.teardown_backlog > (1u << 20))
		return -EINVAL;
	if (c.event_threads)
		evloop_set_max_threads(c.event_threads);
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
	reaper_stats(&threads, &pending);
	out->event_threads = evloop_thread_count();
	out->teardown_threads = threads;
	out->teardown_pending = pending;
	return 0;
}

MICROVM_API int microvm_teardown_wait(int timeout_ms)
{
	return timeout_ms < -1 ? -EINVAL : reaper_wait(timeout_ms);
}
