# shellcheck shell=bash
# Progress lines for the guest build scripts (sourced, not run).
#
#   progress_start WHAT [CMD...]  from now on, every $MICROVM_PROGRESS_EVERY
#                                 seconds (default 15) print on stderr
#                                 "<prog>: still WHAT... <N>s" followed by the
#                                 output of CMD (if given; its first line),
#                                 e.g. a count of objects built so far
#   progress_stop                 stop printing (also safe when not started)
#
# The caller defines log() (one line on stderr); only one ticker runs at a
# time. The ticker is a background subshell of this script; progress_stop
# ends it by its process id (and its sleep with it).

_progress_pid=

progress_start() {
    progress_stop
    local what=$1
    shift
    local t0
    t0=$(date +%s)
    (
        trap 'kill "$_sleep" 2>/dev/null; exit 0' TERM
        while :; do
            sleep "${MICROVM_PROGRESS_EVERY:-15}" &
            _sleep=$!
            wait "$_sleep"
            extra=
            if (($#)); then extra=$("$@" 2>/dev/null | head -n 1) || true; fi
            log "still $what... $(($(date +%s) - t0))s${extra:+ ($extra)}"
        done
    ) &
    _progress_pid=$!
}

progress_stop() {
    if [[ -n $_progress_pid ]]; then
        kill "$_progress_pid" 2>/dev/null || true
        wait "$_progress_pid" 2>/dev/null || true
        _progress_pid=
    fi
}
