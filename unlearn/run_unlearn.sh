#!/usr/bin/env bash
# Make one unlearned model: ./unlearn/run_unlearn.sh METHOD [extra unlearn.py flags]
#
#   ./unlearn/run_unlearn.sh cb_lat                        # real preset, its defaults
#   PRESET=toy ./unlearn/run_unlearn.sh npo                # the toy organism (offline, CPU)
#   EPOCHS=2 LR=5e-6 ./unlearn/run_unlearn.sh cb_lat       # overrides land in the folder name
#   PRINT_OUTDIR=1 PRESET=toy ./unlearn/run_unlearn.sh cb_lat   # print the folder only; train nothing
#   PUSH_TO_HUB=1 NO_EVAL=1 EPOCHS=3 LR=5e-05 BATCH_SIZE=8 RETAIN_WEIGHT=1.0 BETA=0.1 ./unlearn/run_unlearn.sh npo
#
# Methods: `uv run unlearn/unlearn.py --list-methods all` (table: --list-methods table, docs/unlearning.md).
#   rapidun: influence-weighted LoRA unlearning (RapidIn/RapidUn). Its per-text weights are computed first with
#   unlearn/influence_weights.py when missing (skipped when present); FORGET_WEIGHTS/RETAIN_WEIGHTS use others.
#
# Settings: every flag of unlearn.py is an environment variable, the flag in capitals (LR, RETAIN_WEIGHT,
# LAYER_ID, NO_SAVE=1, ...; `uv run unlearn/unlearn.py --help` lists them all). unlearn.py reads them itself:
# an explicit flag wins, and a misspelt variable (RETAIN_WIEGHT) is reported. This script reads:
#   PRESET          real (default), toy, or toy-vlm (the vision-language organism, docs/multimodal.md)
#   SEED            seed of the run (and of the toy organism's base model; default 42)
#   BASE / MODEL    base model to unlearn (default: the preset's base, e.g. models/toy-base-s42)
#   PRINT_OUTDIR=1  print only the output folder and exit (nothing is loaded, built or trained)
#   NUM_PROCESSES   train one run on N processes/GPUs, sharded with FSDP2 through `accelerate launch`
#                   (default 1: one plain process); same results as one process (docs/distributed.md)
#   ACCELERATE_CONFIG  the Accelerate configuration (default: unlearn/accelerate/fsdp2_gpus.yaml on GPUs,
#                   cpu_gloo.yaml without one); fsdp2_1gpu_offload.yaml trains the 6.9B model on one GPU
#   WORKDIR         where data/, models/ and unlearned_models/ live (default: the repository root)
#
# A finished configuration is skipped before any model loads. With PRESET=toy the organism's data and
# models are built first if they are missing (as experiment/pipeline.sh does).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${WORKDIR:-$REPO}"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
METHOD=$1
shift

# Inside a parallel sweep, a sweep script that calls this file directly (not through $RUN_UNLEARN) is
# dispatched to a GPU group all the same, never run here one job at a time.
if [[ -n ${PARALLEL_SWEEP_STATE:-} && -z ${PARALLEL_SWEEP_JOB:-} && ${PRINT_OUTDIR:-} != 1 ]]; then
    exec "$REPO/unlearn/gpu_group_dispatch.sh" "$METHOD" "$@"
fi

PRESET=${PRESET:-real}
SEED=${SEED:-42}
case $PRESET in
    real) ;;
    toy|toy-vlm) export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ;;  # the organisms never need the hub
    *) echo "error: unknown PRESET '$PRESET'; use real, toy or toy-vlm" >&2; exit 2 ;;
esac

arguments=(--method "$METHOD" --preset "$PRESET" --seed "$SEED")
MODEL=${MODEL:-${BASE:-}}
switched_on() { [[ ${!1:-} == 1 || ${!1:-} == true || ${!1:-} == yes ]]; }

# The toy organism's data and models, when missing (never while only printing the folder).
if [[ $PRESET == toy && -z $MODEL ]] && ! switched_on PRINT_OUTDIR; then
    if [[ ! -d data/toy ]]; then
        uv run --quiet "$REPO/create_datasets.py" --preset toy
    fi
    if [[ ! -d models/toy-base-s$SEED ]]; then
        uv run --quiet "$REPO/experiment/build_organism.py" --seed "$SEED"
    fi
fi
if [[ $PRESET == toy-vlm && -z $MODEL ]] && ! switched_on PRINT_OUTDIR && [[ ! -d models/toy-vlm-base-s$SEED ]]; then
    uv run --quiet "$REPO/experiment/build_vlm_organism.py" --seed "$SEED"  # data and both models
fi

# rapidun's per-text weights, when missing (influence_weights.py skips itself when they exist).
if [[ $METHOD == rapidun && -z ${FORGET_WEIGHTS:-} && -z ${RETAIN_WEIGHTS:-} ]] && ! switched_on PRINT_OUTDIR; then
    weight_arguments=(--preset "$PRESET" --seed "$SEED")
    [[ -n $MODEL ]] && weight_arguments+=(--model "$MODEL")
    for variable in FORGET_DATA RETAIN_DATA DEVICE DTYPE THREADS ATTN_IMPLEMENTATION; do
        if [[ -n ${!variable:-} ]]; then
            flag=${variable,,}
            weight_arguments+=("--${flag//_/-}" "${!variable}")
        fi
    done
    uv run --quiet "$REPO/unlearn/influence_weights.py" "${weight_arguments[@]}" >&2
fi

exec uv run --quiet "$REPO/unlearn/unlearn.py" "${arguments[@]}" "$@"
