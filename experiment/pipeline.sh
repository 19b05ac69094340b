#!/usr/bin/env bash
# The experiment driver: every diagnostic, for every model and comparison, skipping finished steps.
#
#   PRESET=toy ./experiment/pipeline.sh      # the toy organism: offline, CPU, minutes
#   ./experiment/pipeline.sh                 # the real deep-ignorance models (PRESET=real)
#   ./experiment/pipeline.sh --force         # recompute every step
#   ENABLE_PRETRAIN_COMPARISON=1 ENABLE_CB_COMPARISONS=1 ./experiment/pipeline.sh   # everything
#
# Settings (environment variables):
#   PRESET        real (default) or toy: model names, data paths, eval tasks, defaults (brittle/presets.py)
#   SEED          seed of the organism and of every step (default 42)
#   SEEDS         several seeds, e.g. SEEDS="42 123": the whole study (organism, unlearning, steps, attack)
#                 once per seed, then one report with mean ± std over the seeds
#   BASELINE_MIN_FORGET_ACC  pre-flight: base's forget accuracy must reach this before anything is
#                 unlearned or attacked (default: the preset's, toy 0.8, real 0.35; 0 disables the check)
#   BASE, FILTERED, UNLEARNED, PRETRAIN, CB_MODEL
#                 override the preset's models (hub ids or local folders). Under PRESET=toy an empty
#                 UNLEARNED (the default) is made with `unlearn/run_unlearn.sh cb_lat`, and an empty
#                 CB_MODEL with `unlearn/run_unlearn.sh cb` when the CB comparisons are on
#   ENABLE_PRETRAIN_COMPARISON=1   adds COMP3: Base -> pretraining checkpoint (default 0)
#   ENABLE_CB_COMPARISONS=1        adds COMP4: Base -> CB, COMP5: CB -> Unlearned, COMP6: Unlearned -> Filtered
#   OUTPUT_ROOT   where results go (default outputs/)
#   DEVICE, DTYPE passed to every step (default auto, auto)
#   STEPS         only run these steps, by output folder name (e.g. STEPS="evals weight_comparison");
#                 default all. Steps left out are neither run nor reported as skipped
#   WORKDIR       where data/, models/, unlearned_models/ and outputs/ live (default: the repository root)
#   MAX_SAMPLES   texts per split for the activation steps (default: the scripts' 500)
#   ACTIVATION_CACHE  on (default) or off: reuse each (model, split) forward pass across the activation
#                 steps through <OUTPUT_ROOT>/.activation_cache, or let every step run its own
#   CACHE_FP16    1: keep cached hidden states in float16 (half the disk, less precision)
#
# Step 13 (the relearning attack) runs for every comparison of Base with an unlearned model (COMP2, and
# COMP4 with the CB comparisons), and the report (outputs/report.html) comes last.
#
# COMP1 (Base -> Filtered: what genuine ignorance looks like) and COMP2 (Base -> Unlearned: what post-hoc
# unlearning looks like) always run. Per-model steps run once per model (outputs/<model>/<step>/);
# pairwise steps once per comparison (outputs/<model_a>__to__<model_b>/<step>/). --force recomputes the
# steps; the toy data, organism and unlearned models are inputs, made only when missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${WORKDIR:-$REPO}"

PRESET=${PRESET:-real}
unset PYTHONDONTWRITEBYTECODE  # each script's environment caches the bytecode it imports: faster start-ups
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
ENABLE_PRETRAIN_COMPARISON=${ENABLE_PRETRAIN_COMPARISON:-0}
ENABLE_CB_COMPARISONS=${ENABLE_CB_COMPARISONS:-0}
for flag in ENABLE_PRETRAIN_COMPARISON ENABLE_CB_COMPARISONS; do
    if [[ ${!flag} != 0 && ${!flag} != 1 ]]; then
        echo "error: $flag='${!flag}' is not a valid value; use $flag=1 to enable it or 0 (the default) to leave it off" >&2
        exit 2
    fi
done
case $PRESET in
    real) ;;
    toy) export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ;;  # the organism never needs the hub
    *) echo "error: unknown PRESET '$PRESET'; use real or toy" >&2; exit 2 ;;
esac

# Several seeds: the whole study once per seed, each run by this script with SEED set, then one report
# over all of them (the per-seed runs leave the report to this one).
if [[ -n ${SEEDS:-} && -z ${PIPELINE_ONE_SEED:-} ]]; then
    MANIFESTS=()
    for seed in $SEEDS; do
        [[ $seed =~ ^[0-9]+$ ]] || { echo "error: SEEDS must be whole numbers separated by spaces, got '$SEEDS'" >&2; exit 2; }
        echo "==> Seed $seed of SEEDS=\"$SEEDS\""
        PIPELINE_ONE_SEED=1 SEED=$seed "$REPO/experiment/pipeline.sh" "$@"
        MANIFESTS+=(--manifest "$OUTPUT_ROOT/.manifests/seed$seed.tsv")
    done
    echo
    echo "==> Report over SEEDS=\"$SEEDS\""
    uv run --quiet "$REPO/experiment/report.py" --preset "$PRESET" --output-root "$OUTPUT_ROOT" "${MANIFESTS[@]}"
    exit
fi

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
    local step_start=$SECONDS status=0
    "$@" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "error: '$label' failed (exit $status); fix the problem above and re-run: finished steps are skipped" >&2
        exit "$status"
    fi
    RAN+=("$label ($((SECONDS - step_start)) s)")
}

# step_selected STEP: true unless STEPS names other steps only (every step this run knows is remembered,
# so that a misspelt name in STEPS can be pointed out in the summary).
KNOWN_STEPS=" "
step_selected() {
    [[ $KNOWN_STEPS == *" $1 "* ]] || KNOWN_STEPS+="$1 "
    [[ -z ${STEPS:-} || " $STEPS " == *" $1 "* || " $STEPS " == *" ${1%_seed*} "* ]]  # relearn_attack_seed42: relearn_attack
}

# step_done STEP MODEL [MODEL_B]: true when the step's output folder exists (and no --force).
step_done() {
    local step=$1 model=$2 model_b=${3:-}
    [[ ${#FORCE[@]} -eq 0 ]] || return 1
    uv run --quiet "$REPO/experiment/plan.py" done --step "$step" --model "$model" ${model_b:+--model-b "$model_b"} \
        --output-root "$OUTPUT_ROOT"
}

# first_visit KEY: true the first time this run asks about KEY (a step and its models), so that a step
# reached twice (Step 0 of base before the pre-flight check and again in the loop; one pair named by two
# roles, e.g. UNLEARNED=FILTERED) runs, or is reported skipped, once.
declare -A VISITED=()
first_visit() {
    [[ -z ${VISITED[$1]:-} ]] && VISITED[$1]=1
}

# per_model_step STEP MODEL SCRIPT [ARGS...]: a step that studies one model.
per_model_step() {
    local step=$1 model=$2 script=$3
    shift 3
    step_selected "$step" || return 0
    first_visit "$step|$model" || return 0
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
    step_selected "$step" || return 0
    first_visit "$step|$model_a|$model_b" || return 0
    if step_done "$step" "$model_a" "$model_b"; then
        SKIPPED+=("$step: $model_a -> $model_b")
        return
    fi
    run_step "$step: $model_a -> $model_b" uv run "$REPO/$script" --model-a "$model_a" --model-b "$model_b" \
        --output-root "$OUTPUT_ROOT" --device "$DEVICE" --dtype "$DTYPE" --seed "$SEED" "${FORCE[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# Preparation (toy preset): the organism's data and models, then the unlearned models. Real models
# come from the hub.
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

# make_unlearned_model VARIABLE METHOD: when VARIABLE (UNLEARNED or CB_MODEL) is empty, make that model with
# the unlearning runner under the toy preset (which trains, or skips a finished configuration) and set
# VARIABLE to the folder it reports.
make_unlearned_model() {
    local variable=$1 method=$2
    [[ -z ${!variable} ]] || return 0
    local runner="$REPO/unlearn/run_unlearn.sh"
    if [[ $PRESET != toy ]]; then
        echo "error: $variable is empty; name the model, e.g. $variable=EleutherAI/deep-ignorance-unfiltered-cb-lat" >&2
        exit 2
    fi
    if [[ ! -x $runner ]]; then
        echo "error: $variable is empty and $runner is missing, so the toy $method model cannot be made;" \
             "set $variable=<model folder>" >&2
        exit 2
    fi
    local folder
    folder=$(PRINT_OUTDIR=1 PRESET=toy SEED="$SEED" "$runner" "$method")
    if [[ -d $folder ]]; then
        SKIPPED+=("toy $method model: $folder")
    else
        run_step "toy $method model (seed $SEED)" env PRESET=toy SEED="$SEED" "$runner" "$method"
        if [[ ! -d $folder ]]; then
            echo "error: $runner $method finished but its model folder $folder does not exist" >&2
            exit 1
        fi
    fi
    printf -v "$variable" '%s' "$folder"
}

# ---------------------------------------------------------------------------------------------
# Pre-flight: the base model must know the forget facts before anything is unlearned or attacked.
# Step 0 of base runs first (it runs anyway) and the check reads it; without it, the check measures.
# ---------------------------------------------------------------------------------------------
per_model_step evals "$BASE" experiment/eval.py --preset "$PRESET"  # Step 0 of base
preflight_status=0
uv run --quiet "$REPO/experiment/plan.py" preflight --model "$BASE" --task "$FORGET_TASK" \
    --threshold "$BASELINE_MIN_FORGET_ACC" --output-root "$OUTPUT_ROOT" || preflight_status=$?
case $preflight_status in
    0) ;;
    3) run_step "pre-flight: $BASE" uv run "$REPO/experiment/relearn_attack.py" --model-a "$BASE" --preset "$PRESET" \
           --check-baseline-only --baseline-min-forget-acc "$BASELINE_MIN_FORGET_ACC" --device "$DEVICE" \
           --dtype "$DTYPE" --seed "$SEED" --output-root "$OUTPUT_ROOT" ;;
    *) exit "$preflight_status" ;;
esac

make_unlearned_model UNLEARNED cb_lat  # the default intervention: circuit breakers + latent adversarial training
if [[ $ENABLE_CB_COMPARISONS == 1 ]]; then
    make_unlearned_model CB_MODEL cb  # circuit breakers alone: the CB -> CB-LAT ablation chain
fi

# ---------------------------------------------------------------------------------------------
# The models and comparisons under study.
# ---------------------------------------------------------------------------------------------
MODEL_LABELS=() MODELS=()
COMPARISON_LABELS=() COMPARISONS=()  # COMPARISONS holds "MODEL_A|MODEL_B"

# add_model LABEL MODEL: a model whose per-model steps run (each model once, whatever its roles).
add_model() {
    local label=$1 model=$2 index
    for index in "${!MODELS[@]}"; do
        if [[ ${MODELS[$index]} == "$model" ]]; then
            MODEL_LABELS[index]+=", $label"
            return
        fi
    done
    MODEL_LABELS+=("$label") MODELS+=("$model")
}

# add_comparison LABEL MODEL_A MODEL_B: a comparison whose pairwise steps run, B against reference A.
add_comparison() {
    COMPARISON_LABELS+=("$1") COMPARISONS+=("$2|$3")
}

add_model Base "$BASE"
add_model Filtered "$FILTERED"
add_model Unlearned "$UNLEARNED"
add_comparison "COMP1 Base -> Filtered" "$BASE" "$FILTERED"            # what does genuine ignorance look like?
add_comparison "COMP2 Base -> Unlearned" "$BASE" "$UNLEARNED"          # what does post-hoc unlearning look like?
if [[ $ENABLE_PRETRAIN_COMPARISON == 1 ]]; then
    add_model "Pretraining checkpoint" "$PRETRAIN"
    add_comparison "COMP3 Base -> Pretraining checkpoint" "$BASE" "$PRETRAIN"  # training-stage effects
fi
if [[ $ENABLE_CB_COMPARISONS == 1 ]]; then
    add_model CB "$CB_MODEL"
    add_comparison "COMP4 Base -> CB" "$BASE" "$CB_MODEL"                # circuit breakers alone
    add_comparison "COMP5 CB -> Unlearned" "$CB_MODEL" "$UNLEARNED"      # what LAT adds on top of CB
    add_comparison "COMP6 Unlearned -> Filtered" "$UNLEARNED" "$FILTERED"  # how far unlearning is from ignorance
fi

# A model folder that does not exist stops the pipeline before any step runs (hub ids, which need the
# network, are checked by the steps themselves; a name with at most one '/' that is no folder is a hub id).
for index in "${!MODELS[@]}"; do
    model=${MODELS[index]}
    if [[ ! -d $model ]] && [[ -e $model || $model == /* || $model == .* || $model == "~"* || $model == */*/* ]]; then
        echo "error: model $model not found (the ${MODEL_LABELS[index]} model): no such folder; set BASE, FILTERED," \
             "UNLEARNED, PRETRAIN or CB_MODEL to an existing model folder or a hub id" >&2
        exit 2
    fi
done

# The steps. Each diagnostic is one line in one of these two functions.
per_model_steps() {
    local model=$1
    per_model_step evals "$model" experiment/eval.py --preset "$PRESET"  # Step 0
    per_model_step linear_probes "$model" experiment/linear_probe_analysis.py "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 5
    per_model_step wmdp_tuned_lens "$model" experiment/layerwise_wmdp_accuracy.py --lens both "${TEXT_ARGS[@]}" "${CACHE_ARGS[@]}"  # Step 6
}

pairwise_steps() {
    local model_a=$1 model_b=$2
    pairwise_step weight_comparison "$model_a" "$model_b" experiment/collect_weight_comparison.py        # Step 1
    pairwise_step mlp_attn_analysis "$model_a" "$model_b" experiment/analyze_mlp_vs_attn.py              # Step 4
    pairwise_step null_space_analysis "$model_a" "$model_b" experiment/null_space_analysis.py            # Step 7
    pairwise_step mlp_nullspace "$model_a" "$model_b" experiment/mlp_nullspace_alignment.py              # Step 10
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

# Step 13: the relearning attack on each unlearned model (conditions A, B), on base (C) and on filtered (F).
pairwise_step "relearn_attack_seed$SEED" "$BASE" "$UNLEARNED" experiment/relearn_attack.py --filtered "$FILTERED" \
    --preset "$PRESET" --baseline-min-forget-acc "$BASELINE_MIN_FORGET_ACC"
if [[ $ENABLE_CB_COMPARISONS == 1 ]]; then
    pairwise_step "relearn_attack_seed$SEED" "$BASE" "$CB_MODEL" experiment/relearn_attack.py --filtered "$FILTERED" \
        --preset "$PRESET" --baseline-min-forget-acc "$BASELINE_MIN_FORGET_ACC"
fi

# The comparisons of this seed, for the report (and for a SEEDS run's report over every seed).
mkdir -p "$OUTPUT_ROOT/.manifests"
for index in "${!COMPARISONS[@]}"; do
    printf '%s\t%s\t%s\n' "${COMPARISON_LABELS[index]}" "${COMPARISONS[index]%%|*}" "${COMPARISONS[index]##*|}"
done > "$OUTPUT_ROOT/.manifests/seed$SEED.tsv.partial"
mv "$OUTPUT_ROOT/.manifests/seed$SEED.tsv.partial" "$OUTPUT_ROOT/.manifests/seed$SEED.tsv"

# The report: reads what the steps wrote (cheap, so it always runs); a SEEDS run makes it after every seed.
if [[ -z ${PIPELINE_ONE_SEED:-} ]] && step_selected report; then
    run_step "report" uv run --quiet "$REPO/experiment/report.py" --preset "$PRESET" --output-root "$OUTPUT_ROOT" \
        --manifest "$OUTPUT_ROOT/.manifests/seed$SEED.tsv"
fi

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
mapfile -t FOLDERS < <(uv run --quiet "$REPO/experiment/plan.py" where --output-root "$OUTPUT_ROOT" \
    "${MODELS[@]}" "${COMPARISONS[@]}")
echo
echo "==> Pipeline finished in $((SECONDS - START_SECONDS)) s (PRESET=$PRESET, SEED=$SEED)"
echo "Ran ${#RAN[@]} step(s):"
for entry in "${RAN[@]+"${RAN[@]}"}"; do echo "  - $entry"; done
echo "Skipped ${#SKIPPED[@]} finished step(s) (pass --force to redo them):"
for entry in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "  - $entry"; done
for step in ${STEPS:-}; do
    if [[ $KNOWN_STEPS != *" $step "* ]]; then
        echo "warning: STEPS names '$step', which is not a step of this pipeline (steps:$KNOWN_STEPS)" >&2
    fi
done
echo "Results per model (<folder>/<step>/):"
for index in "${!MODELS[@]}"; do
    printf '  %-40s %s\n' "${MODEL_LABELS[index]}:" "${FOLDERS[index]}/"
done
echo "Results per comparison (<folder>/<step>/):"
for index in "${!COMPARISONS[@]}"; do
    printf '  %-40s %s\n' "${COMPARISON_LABELS[index]}:" "${FOLDERS[${#MODELS[@]} + index]}/"
done
if [[ -s $BRITTLE_FORWARD_PASS_LOG ]]; then
    awk -F'\t' '$1 == "computed" { computed += $2; seconds += $7 } $1 == "cached" { cached += 1 }
                $1 == "perturbed" { perturbed += $2; seconds += $7 }
                END { printf "Activation forward passes: %d over (model, split) texts, %d perturbed (Step 12); " \
                      "%d splits read from the cache; %.0f s in forward passes\n", computed, perturbed, cached, seconds }' \
        "$BRITTLE_FORWARD_PASS_LOG"
fi
