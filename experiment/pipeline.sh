#!/usr/bin/env bash
# The experiment driver: every diagnostic, for every model and comparison, skipping finished steps.
#
#   PRESET=toy ./experiment/pipeline.sh      # the toy organism: offline, CPU, minutes
#   ./experiment/pipeline.sh                 # the real deep-ignorance models (PRESET=real)
#   ./experiment/pipeline.sh --force         # recompute every step
#
# Settings (environment variables):
#   PRESET        real (default) or toy: model names, data paths, eval tasks, defaults (brittle/presets.py)
#   SEED          seed of the organism and of every step (default 42)
#   BASE, FILTERED, UNLEARNED, PRETRAIN, CB_MODEL
#                 override the preset's models (hub ids or local folders)
#   OUTPUT_ROOT   where results go (default outputs/)
#   DEVICE, DTYPE passed to every step (default auto, auto)
#   STEPS         only run these steps, by output folder name (e.g. STEPS="evals"); default all
#   WORKDIR       where data/, models/ and outputs/ live (default: the repository root)
#   MAX_SAMPLES   texts per split for the activation steps (default: the scripts' 500)
#   ACTIVATION_CACHE  on (default) or off: reuse each (model, split) forward pass across the activation
#                 steps through <OUTPUT_ROOT>/.activation_cache, or let every step run its own
#   CACHE_FP16    1: keep cached hidden states in float16 (half the disk, less precision)
#
# Per-model steps run once per model (outputs/<model>/<step>/); pairwise steps once per
# comparison (outputs/<model_a>__to__<model_b>/<step>/), always with Base as the reference.
# --force recomputes the steps; the toy data and organism are inputs, rebuilt only when missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${WORKDIR:-$REPO}"

PRESET=${PRESET:-real}
SEED=${SEED:-42}
OUTPUT_ROOT=${OUTPUT_ROOT:-outputs}
DEVICE=${DEVICE:-auto}
DTYPE=${DTYPE:-auto}
FORCE=()
for argument in "$@"; do
    case $argument in
        --force) FORCE=(--force) ;;
        *) echo "error: unknown argument '$argument'; the only argument is --force (settings are environment variables)" >&2
           exit 2 ;;
    esac
done
case $PRESET in
    real) ;;
    toy) export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ;;  # the organism never needs the hub
    *) echo "error: unknown PRESET '$PRESET'; use real or toy" >&2; exit 2 ;;
esac

# The preset's models and data, unless already set in the environment.
eval "$(uv run --quiet "$REPO/experiment/plan.py" preset --preset "$PRESET" --seed "$SEED")"

RAN=()
SKIPPED=()
START_SECONDS=$SECONDS

# Activation steps: how many texts, and whether they share their forward passes through the cache.
# Every forward pass they run is appended to BRITTLE_FORWARD_PASS_LOG and counted in the summary.
TEXT_ARGS=(--preset "$PRESET" ${MAX_SAMPLES:+--max-samples "$MAX_SAMPLES"})
CACHE_ARGS=()
case ${ACTIVATION_CACHE:-on} in
    on) ;;
    off) CACHE_ARGS+=(--no-cache) ;;
    *) echo "error: ACTIVATION_CACHE must be on or off, got '$ACTIVATION_CACHE'" >&2; exit 2 ;;
esac
if [[ ${CACHE_FP16:-0} == 1 ]]; then CACHE_ARGS+=(--cache-fp16); fi
export BRITTLE_FORWARD_PASS_LOG
BRITTLE_FORWARD_PASS_LOG=$(mktemp "${TMPDIR:-/tmp}/brittle-forward-passes.XXXXXX")
trap 'rm -f "$BRITTLE_FORWARD_PASS_LOG"' EXIT

# run_step LABEL COMMAND...: run one step, recording it in the summary.
run_step() {
    local label=$1
    shift
    echo
    echo "==> $label"
    local step_start=$SECONDS
    "$@"
    RAN+=("$label ($((SECONDS - step_start)) s)")
}

# step_done STEP MODEL [MODEL_B]: true when the step's output folder exists (and no --force),
# or when STEPS names other steps only.
step_done() {
    local step=$1 model=$2 model_b=${3:-}
    if [[ -n ${STEPS:-} && " $STEPS " != *" $step "* ]]; then return 0; fi
    [[ ${#FORCE[@]} -eq 0 ]] || return 1
    uv run --quiet "$REPO/experiment/plan.py" done --step "$step" --model "$model" ${model_b:+--model-b "$model_b"} \
        --output-root "$OUTPUT_ROOT"
}

# per_model_step STEP MODEL SCRIPT [ARGS...]: a step that studies one model.
per_model_step() {
    local step=$1 model=$2 script=$3
    shift 3
    if step_done "$step" "$model"; then
        SKIPPED+=("$step: $model")
        return
    fi
    run_step "$step: $model" uv run "$REPO/$script" --model "$model" --output-root "$OUTPUT_ROOT" \
        --device "$DEVICE" --dtype "$DTYPE" --seed "$SEED" "${FORCE[@]}" "$@"
}

# pairwise_step STEP MODEL_A MODEL_B SCRIPT [ARGS...]: a step that compares model B with model A.
pairwise_step() {
    local step=$1 model_a=$2 model_b=$3 script=$4
    shift 4
    if step_done "$step" "$model_a" "$model_b"; then
        SKIPPED+=("$step: $model_a -> $model_b")
        return
    fi
    run_step "$step: $model_a -> $model_b" uv run "$REPO/$script" --model-a "$model_a" --model-b "$model_b" \
        --output-root "$OUTPUT_ROOT" --device "$DEVICE" --dtype "$DTYPE" --seed "$SEED" "${FORCE[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# Preparation: the organism's data and models (toy preset only; real models come from the hub).
# ---------------------------------------------------------------------------------------------
if [[ $PRESET == toy ]]; then
    if [[ -d data/toy ]]; then
        SKIPPED+=("toy data")
    else
        run_step "toy data" uv run "$REPO/create_datasets.py" --preset toy
    fi
    if [[ -d $BASE && -d $FILTERED && -d $PRETRAIN ]]; then
        SKIPPED+=("toy organism (seed $SEED)")
    else
        run_step "toy organism (seed $SEED)" uv run "$REPO/experiment/build_organism.py" --seed "$SEED"
    fi
fi

# ---------------------------------------------------------------------------------------------
# The models and comparisons under study.
# ---------------------------------------------------------------------------------------------
MODELS=("$BASE" "$FILTERED")
COMPARISONS=("$BASE|$FILTERED")  # COMP1: Base -> Filtered (what does genuine ignorance look like?)
if [[ -n $UNLEARNED ]]; then
    MODELS+=("$UNLEARNED")
    COMPARISONS+=("$BASE|$UNLEARNED")  # COMP2: Base -> Unlearned (what does post-hoc unlearning look like?)
fi

# The steps. Each later diagnostic adds one line to one of these two functions.
per_model_steps() {
    local model=$1
    per_model_step evals "$model" experiment/eval.py --preset "$PRESET"  # Step 0
    per_model_step linear_probes "$model" experiment/linear_probe_analysis.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 5
    per_model_step wmdp_tuned_lens "$model" experiment/layerwise_wmdp_accuracy.py --lens both "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 6
}

pairwise_steps() {
    local model_a=$1 model_b=$2
    :  # Steps 1-4 and 7-12 go here: pairwise_step <folder> "$model_a" "$model_b" <script> [args]
    pairwise_step activation_comparison "$model_a" "$model_b" experiment/collect_activation_comparison.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 3
    pairwise_step activation_separation "$model_a" "$model_b" experiment/activation_separation_analysis.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 8
    pairwise_step activation_covariance "$model_a" "$model_b" experiment/activation_covariance_analysis.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 9
    pairwise_step row_space_projection "$model_a" "$model_b" experiment/row_space_projection_analysis.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 11
    pairwise_step lipschitzness "$model_a" "$model_b" experiment/local_lipschitzness_analysis.py "${TEXT_ARGS[@]}"  # Step 12
}

for model in "${MODELS[@]}"; do
    per_model_steps "$model"
done
for comparison in "${COMPARISONS[@]}"; do
    pairwise_steps "${comparison%%|*}" "${comparison##*|}"
done

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
echo
echo "==> Pipeline finished in $((SECONDS - START_SECONDS)) s (PRESET=$PRESET, SEED=$SEED)"
echo "Ran ${#RAN[@]} step(s):"
for entry in "${RAN[@]+"${RAN[@]}"}"; do echo "  - $entry"; done
echo "Skipped ${#SKIPPED[@]} finished step(s) (pass --force to redo them):"
for entry in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "  - $entry"; done
if [[ -s $BRITTLE_FORWARD_PASS_LOG ]]; then
    awk -F'\t' '$1 == "computed" { computed += $2; seconds += $7 } $1 == "cached" { cached += 1 }
                $1 == "perturbed" { perturbed += $2; seconds += $7 }
                END { printf "Activation forward passes: %d over (model, split) texts, %d perturbed (Step 12); " \
                      "%d splits read from the cache; %.0f s in forward passes\n", computed, perturbed, cached, seconds }' \
        "$BRITTLE_FORWARD_PASS_LOG"
fi
echo "Outputs: $OUTPUT_ROOT/<model>/<step>/ and $OUTPUT_ROOT/<model_a>__to__<model_b>/<step>/"
