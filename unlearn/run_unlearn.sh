#!/usr/bin/env bash
# Make one unlearned model: ./unlearn/run_unlearn.sh METHOD [extra unlearn.py flags]
#
#   ./unlearn/run_unlearn.sh cb_lat                        # real preset, the seed's defaults
#   PRESET=toy ./unlearn/run_unlearn.sh npo                # the toy organism (offline, CPU)
#   EPOCHS=2 LR=5e-6 ./unlearn/run_unlearn.sh cb_lat       # overrides land in the folder name
#   PRINT_OUTDIR=1 PRESET=toy ./unlearn/run_unlearn.sh cb_lat   # print the folder only; train nothing
#   PUSH_TO_HUB=1 NO_EVAL=1 EPOCHS=3 LR=5e-05 BATCH_SIZE=8 RETAIN_WEIGHT=1.0 BETA=0.1 ./unlearn/run_unlearn.sh npo
#
# Methods: ga_simple ga grad_diff dpo npo simnpo rmu cb lat cb_lat wt_dist wt_dist_reg rapidun
#   rapidun: influence-weighted LoRA unlearning (seed 003). Its per-text weights are computed first with
#   unlearn/influence_weights.py when missing (skipped when present); FORGET_WEIGHTS/RETAIN_WEIGHTS use others.
#
# Settings (environment variables; unset = the preset's default, see `uv run unlearn/unlearn.py --help`):
#   PRESET          real (default) or toy
#   SEED            seed of the run (and of the toy organism's base model; default 42)
#   BASE / MODEL    base model to unlearn (default: the preset's base, e.g. models/toy-base-s42)
#   EPOCHS LR BATCH_SIZE GRAD_ACCUM_STEPS MAX_LENGTH GRAD_CLIP WEIGHT_DECAY EVAL_SPLIT EVAL_INTERVAL MAX_STEPS
#   RETAIN_WEIGHT FORGET_WEIGHT BETA ALPHA STEERING_COEFF LAYER_ID LAT_EPS LAT_STEPS WT_NOISE_STD WT_REG_LAMBDA
#   ASCENT_ALPHA DESCENT_BETA MIX_RATIO (retain:forget texts per step, e.g. 3:1)
#   LORA_RANK LORA_ALPHA EVAL_BATCH_SIZE THREADS
#   FORGET_DATA RETAIN_DATA   text files (default: the preset's)
#   FORGET_WEIGHTS RETAIN_WEIGHTS   per-text weights, JSONL (any method; rapidun's default: computed)
#   DEVICE DTYPE    default auto, auto (DTYPE is the compute dtype; weights and AdamW stay fp32)
#   SAVE_DTYPE      dtype of the saved weights (default auto: the base checkpoint's; fp32 keeps all of ΔW)
#   ATTN_IMPLEMENTATION  auto (flash_attention_2 when available, else sdpa), sdpa, flash_attention_2, eager
#   NO_SAVE=1       keep results but not the weights      NO_EVAL=1   skip the Step 0 evaluation
#   PUSH_TO_HUB=1   upload the finished model (HUB_REPO=user/name to choose the repository)
#   FORCE=1         train again even if this configuration finished
#   PRINT_OUTDIR=1  print only the output folder and exit (nothing is loaded or trained)
#   UNLEARNED_ROOT  where model folders go (default unlearned_models/)
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

PRESET=${PRESET:-real}
SEED=${SEED:-42}
case $PRESET in
    real) ;;
    toy) export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ;;  # the organism never needs the hub
    *) echo "error: unknown PRESET '$PRESET'; use real or toy" >&2; exit 2 ;;
esac

arguments=(--method "$METHOD" --preset "$PRESET" --seed "$SEED")
MODEL=${MODEL:-${BASE:-}}
[[ -n $MODEL ]] && arguments+=(--model "$MODEL")

# Every set variable becomes its flag: RETAIN_WEIGHT=2 -> --retain-weight 2.
for variable in EPOCHS LR BATCH_SIZE GRAD_ACCUM_STEPS MAX_LENGTH GRAD_CLIP WEIGHT_DECAY EVAL_SPLIT EVAL_INTERVAL \
        MAX_STEPS RETAIN_WEIGHT FORGET_WEIGHT BETA ALPHA STEERING_COEFF LAYER_ID LAT_EPS LAT_STEPS WT_NOISE_STD \
        WT_REG_LAMBDA ASCENT_ALPHA DESCENT_BETA MIX_RATIO LORA_RANK LORA_ALPHA EVAL_BATCH_SIZE THREADS FORGET_DATA \
        RETAIN_DATA FORGET_WEIGHTS RETAIN_WEIGHTS DEVICE DTYPE UNLEARNED_ROOT HUB_REPO WANDB_PROJECT SAVE_DTYPE \
        ATTN_IMPLEMENTATION; do
    if [[ -n ${!variable:-} ]]; then
        flag=${variable,,}
        arguments+=("--${flag//_/-}" "${!variable}")
    fi
done
# Switches: 1/true/yes turn them on.
switched_on() { [[ ${!1:-} == 1 || ${!1:-} == true || ${!1:-} == yes ]]; }
for variable in NO_SAVE NO_EVAL PUSH_TO_HUB FORCE PRINT_OUTDIR; do
    if switched_on "$variable"; then
        flag=${variable,,}
        arguments+=("--${flag//_/-}")
    fi
done

# The toy organism's data and models, when missing (never while only printing the folder).
if [[ $PRESET == toy && -z $MODEL ]] && ! switched_on PRINT_OUTDIR; then
    if [[ ! -d data/toy ]]; then
        uv run --quiet "$REPO/create_datasets.py" --preset toy
    fi
    if [[ ! -d models/toy-base-s$SEED ]]; then
        uv run --quiet "$REPO/experiment/build_organism.py" --seed "$SEED"
    fi
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
