#!/usr/bin/env bash
# The runner parallel_sweep.sh substitutes for run_unlearn.sh (through RUN_UNLEARN): it waits for a
# free GPU group, starts `run_unlearn.sh METHOD` there in the background with CUDA_VISIBLE_DEVICES set
# to that group and NUM_PROCESSES to its size (one FSDP2 run over the group's GPUs, see
# docs/distributed.md), and returns at once so that the sweep loop queues the next configuration.
# run_unlearn.sh called directly by a sweep script inside a parallel sweep lands here too.
#
# Not meant to be called by hand. State lives in $PARALLEL_SWEEP_STATE (made by parallel_sweep.sh):
#   groups           one GPU group per line, e.g. "0,1"
#   busy/<k>/        exists while group k runs a job (mkdir is the atomic claim); holds the job's pid
#   jobs/<n>/        one folder per dispatched job: command, group, pid, status (exit code when done)
set -euo pipefail
set -m  # each background job gets its own process group, so parallel_sweep.sh can stop it whole
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${PARALLEL_SWEEP_STATE:?"gpu_group_dispatch.sh is started by parallel_sweep.sh, not by hand"}
runner=${PARALLEL_SWEEP_RUNNER:-$REPO/unlearn/run_unlearn.sh}
poll_seconds=${PARALLEL_SWEEP_POLL_SECONDS:-2}
mapfile -t groups < "$state/groups"

# A group is free when nobody holds it, or its holder died without releasing it.
claim_free_group() {
    local index
    for index in "${!groups[@]}"; do
        if mkdir "$state/busy/$index" 2>/dev/null; then
            echo "$index"
            return 0
        fi
        local pid
        pid=$(cat "$state/busy/$index/pid" 2>/dev/null || true)
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            rm -rf "$state/busy/$index"
        fi
    done
    return 1
}

until group_index=$(claim_free_group); do
    [[ -d $state ]] || exit 1  # the parallel sweep was stopped
    sleep "$poll_seconds"
done
group=${groups[$group_index]}
IFS=, read -r -a group_gpus <<< "$group"

# The next job number (mkdir again: atomic even if a sweep script dispatches concurrently).
job=1
until mkdir "$state/jobs/$job" 2>/dev/null; do
    job=$((job + 1))
done
job_dir=$state/jobs/$job
log=$PARALLEL_SWEEP_LOGS/job-$(printf '%03d' "$job")-$1.log
printf '%s\n' "$*" > "$job_dir/command"
echo "$group" > "$job_dir/group"
echo "$log" > "$job_dir/log"

(
    echo "$BASHPID" > "$state/busy/$group_index/pid"
    echo "$BASHPID" > "$job_dir/pid"
    status=0
    {
        echo "# job $job on GPUs $group: $* ($(date -u +%FT%TZ))"
        # PARALLEL_SWEEP_JOB: run_unlearn.sh runs the job itself instead of dispatching it again.
        CUDA_VISIBLE_DEVICES=$group NUM_PROCESSES=${#group_gpus[@]} PARALLEL_SWEEP_JOB=$job "$runner" "$@"
    } > "$log" 2>&1 < /dev/null || status=$?
    echo "$status" > "$job_dir/status"
    rm -rf "$state/busy/$group_index"
) &
echo "dispatched job $job on GPUs $group: $* (log $log)"
