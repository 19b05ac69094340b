#!/usr/bin/env bash
# Run any sweep script's configurations in parallel, one per free group of GPUs.
#
#   ./unlearn/parallel_sweep.sh ./unlearn/sweep_unlearn.sh
#   ./unlearn/parallel_sweep.sh ./unlearn/create_all_unlearning_models.sh
#   GPUS_PER_JOB=2 ./unlearn/parallel_sweep.sh ./unlearn/sweep_unlearn.sh   # skip the memory probe
#
# 1. Loads .env, so every job sees WANDB_API_KEY, HF_TOKEN, ...
# 2. Estimates the training memory of the base model from its config.json alone
#    (unlearn/estimate_memory.py: the most demanding method; 16 bytes per trainable parameter for fp32
#    weights, gradients and AdamW states, plus frozen weights, copies and activations)
#    and reads each GPU's memory from nvidia-smi.
# 3. Picks the smallest power-of-two group (1, 2, 4, 8 GPUs) that holds that and divides the GPU count
#    (1 if the probe fails; GPUS_PER_JOB=N overrides).
# 4. Runs the sweep script with RUN_UNLEARN pointing at unlearn/gpu_group_dispatch.sh, which starts
#    each configuration on a free group (CUDA_VISIBLE_DEVICES) and returns at once. Each job is one
#    training run sharded over its group's GPUs (NUM_PROCESSES = group size: Accelerate + FSDP2,
#    docs/distributed.md). A sweep script that calls ./unlearn/run_unlearn.sh directly instead of
#    "$RUN_UNLEARN" is dispatched all the same (run_unlearn.sh hands itself to the dispatcher).
#    No file of the repository is modified.
# 5. Waits for every job and prints a summary (logs under outputs/parallel_sweep/<time>/).
#    Ctrl-C (or SIGTERM) stops the sweep and every running job; finished runs stay finished.
#
# Settings: GPUS_PER_JOB; GPU_LIST="0,1,2,3" and GPU_MEMORY_MIB=81920 replace the nvidia-smi probe
# (e.g. to use only some GPUs, or to test without GPUs); PRESET, SEED, BASE/MODEL (for the memory
# estimate) and every sweep and run_unlearn.sh variable pass through to the jobs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ $# -lt 1 || ! -f $1 ]]; then
    echo "error: usage: ./unlearn/parallel_sweep.sh SWEEP_SCRIPT [arguments]; '${1:-}' is not a file" >&2
    exit 2
fi
sweep_script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
cd "${WORKDIR:-$REPO}"

# 1. Secrets and settings for every job.
for env_file in "$REPO/.env" .env; do
    if [[ -f $env_file ]]; then
        set -a
        # shellcheck disable=SC1090
        source "$env_file"
        set +a
        break
    fi
done

# 2. The GPUs: index and memory (MiB) of each.
if [[ -n ${GPU_LIST:-} ]]; then
    IFS=', ' read -r -a gpus <<< "$GPU_LIST"
    gpu_memory_mib=${GPU_MEMORY_MIB:-0}
else
    if ! inventory=$(nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,nounits 2>/dev/null) \
            || [[ -z $inventory ]]; then
        echo "error: nvidia-smi found no GPUs; set GPU_LIST=0,1,... (and GPU_MEMORY_MIB) to say which to use" >&2
        exit 2
    fi
    gpus=()
    gpu_memory_mib=
    while IFS=', ' read -r index memory; do
        gpus+=("$index")
        if [[ -z $gpu_memory_mib || $memory -lt $gpu_memory_mib ]]; then gpu_memory_mib=$memory; fi
    done <<< "$inventory"
    gpu_memory_mib=${GPU_MEMORY_MIB:-$gpu_memory_mib}
fi
gpu_count=${#gpus[@]}

# 3. GPUs per job.
if [[ -n ${GPUS_PER_JOB:-} ]]; then
    group_size=$GPUS_PER_JOB
    echo "GPUs per job: $group_size (GPUS_PER_JOB)"
else
    group_size=1
    model_arguments=(--preset "${PRESET:-real}" --seed "${SEED:-42}")
    model=${MODEL:-${BASE:-}}
    [[ -n $model ]] && model_arguments+=(--model "$model")
    if needed_mib=$(uv run --quiet "$REPO/unlearn/estimate_memory.py" "${model_arguments[@]}") \
            && [[ $gpu_memory_mib -gt 0 ]]; then
        for size in 1 2 4 8; do
            if (( size <= gpu_count && gpu_count % size == 0 && size * gpu_memory_mib >= needed_mib )); then
                group_size=$size
                break
            fi
            group_size=$gpu_count  # nothing smaller fits: use every GPU for each job
        done
        echo "GPUs per job: $group_size (training needs ~$needed_mib MiB; $gpu_memory_mib MiB per GPU)"
    else
        echo "GPUs per job: 1 (the memory probe failed; set GPUS_PER_JOB=N if jobs run out of memory)"
    fi
fi
if (( group_size < 1 || group_size > gpu_count )); then
    echo "error: GPUS_PER_JOB=$group_size does not fit the $gpu_count GPU(s) available" >&2
    exit 2
fi

# 4. The dispatcher's state: one line per group, busy markers and job records.
state=$(mktemp -d "${TMPDIR:-/tmp}/parallel_sweep.XXXXXX")
mkdir -p "$state/busy" "$state/jobs"
for ((start = 0; start + group_size <= gpu_count; start += group_size)); do
    group=$(IFS=,; echo "${gpus[*]:start:group_size}")
    echo "$group" >> "$state/groups"
done
logs=outputs/parallel_sweep/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$logs"
echo "$((gpu_count / group_size)) group(s): $(paste -sd ' ' "$state/groups" | sed 's/ / | /g'); logs in $logs"

# Job status: running, done or failed (dead without an exit code counts as failed).
job_state() {
    local job_dir=$1
    if [[ -f $job_dir/status ]]; then
        [[ $(cat "$job_dir/status") == 0 ]] && echo done || echo failed
    elif [[ ! -f $job_dir/pid ]] || kill -0 "$(cat "$job_dir/pid")" 2>/dev/null; then
        echo running
    else
        echo failed
    fi
}

stop_everything() {
    trap - INT TERM
    echo "stopping: ending every running job" >&2
    for job_dir in "$state"/jobs/*/; do
        [[ -f $job_dir/pid ]] && kill -TERM -- "-$(cat "$job_dir/pid")" 2>/dev/null || true
    done
    [[ -n ${sweep_pid:-} ]] && kill -TERM -- "-$sweep_pid" 2>/dev/null || true
    sleep 2
    for job_dir in "$state"/jobs/*/; do
        [[ -f $job_dir/pid ]] && kill -KILL -- "-$(cat "$job_dir/pid")" 2>/dev/null || true
    done
    rm -rf "$state"
    exit 130
}
trap stop_everything INT TERM

# 5. The sweep itself, then wait for what it dispatched.
export PARALLEL_SWEEP_STATE=$state PARALLEL_SWEEP_LOGS=$logs RUN_UNLEARN=$REPO/unlearn/gpu_group_dispatch.sh
sweep_status=0
set -m  # the sweep script (and a dispatcher it is waiting on) in a process group of its own
"$sweep_script" "$@" &
sweep_pid=$!
wait "$sweep_pid" || sweep_status=$?
sweep_pid=
echo "sweep script done (exit $sweep_status); waiting for the running jobs"
while :; do
    running=0
    for job_dir in "$state"/jobs/*/; do
        [[ -d $job_dir && $(job_state "$job_dir") == running ]] && running=$((running + 1))
    done
    (( running == 0 )) && break
    sleep "${PARALLEL_SWEEP_POLL_SECONDS:-2}"
done

succeeded=0
failed=()
for job_dir in "$state"/jobs/*/; do
    [[ -d $job_dir ]] || continue
    if [[ $(job_state "$job_dir") == done ]]; then
        succeeded=$((succeeded + 1))
    else
        failed+=("$(cat "$job_dir/command") (log $(cat "$job_dir/log"))")
    fi
done
rm -rf "$state"
trap - INT TERM
echo "==> Parallel sweep finished: $succeeded job(s) succeeded, ${#failed[@]} failed"
for failure in "${failed[@]+"${failed[@]}"}"; do echo "  failed: $failure"; done
[[ ${#failed[@]} -eq 0 && $sweep_status -eq 0 ]]
