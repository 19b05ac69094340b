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
#   ENABLE_ATTACKS=0/1             Steps 14-18 (quantization, benign fine-tuning, directional ablation, prompt
#                                  probing, membership inference) and the verdict (default 1 for toy, 0 for real)
#   OUTPUT_ROOT   where results go (default outputs/)
#   DEVICE, DTYPE passed to every step (default auto, auto)
#   STEPS         only run these steps, by output folder name (e.g. STEPS="evals weight_comparison");
#                 default all (the list: experiment/steps.py). Steps left out are neither run nor reported
#                 as skipped; an unknown name stops the pipeline before anything runs
#   JOBS          steps run side by side on the CPU (default 1: one after another, output on the terminal;
#                 N > 1: each step logs to <OUTPUT_ROOT>/.logs/, each slot gets cores/N threads)
#   GPU_LIST      GPUs to use, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi
#                 lists). With GPUs and DEVICE auto or cuda, independent steps run one per free GPU
#                 (GPUS_PER_JOB GPUs each, default 1; JOBS caps how many at once)
#   DRY_RUN=1     print the plan (steps, wave, device, what would be skipped) and run nothing
#   WARM_START=0  start every CPU step through `uv run` (default 1: torch and transformers are imported once
#                 and each CPU step whose environment is the pipeline's starts as a fork; brittle/warmstart.py)
#   WORKDIR       where data/, models/, unlearned_models/ and outputs/ live (default: the repository root)
#   MAX_SAMPLES   texts per split for the activation steps (default: the scripts' 500)
#
# Step 13 (the relearning attack) runs for every comparison of Base with an unlearned model (COMP2, and
# COMP4 with the CB comparisons), and the report (outputs/report.html) comes last.
#
# Every setting, flag, step name and model is checked before the first step. The steps, their order and
# what each needs come from experiment/steps.py; experiment/plan.py plans and runs them (docs/pipeline.md).
#
# COMP1 (Base -> Filtered: what genuine ignorance looks like) and COMP2 (Base -> Unlearned: what post-hoc
# unlearning looks like) always run. Per-model steps run once per model (outputs/<model>/<step>/);
# pairwise steps once per comparison (outputs/<model_a>__to__<model_b>/<step>/). --force recomputes the
# steps; the toy data, organism and unlearned models are inputs, made only when missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${WORKDIR:-$REPO}"

export PRESET=${PRESET:-real}
unset PYTHONDONTWRITEBYTECODE  # each script's environment caches the bytecode it imports: faster start-ups
export SEED=${SEED:-42} OUTPUT_ROOT=${OUTPUT_ROOT:-outputs} DEVICE=${DEVICE:-auto} DTYPE=${DTYPE:-auto}
export ENABLE_PRETRAIN_COMPARISON=${ENABLE_PRETRAIN_COMPARISON:-0} ENABLE_CB_COMPARISONS=${ENABLE_CB_COMPARISONS:-0}
# The attack suite (Steps 14-18 and the verdict): on for the organism; off by default for the real models,
# whose quantization and membership-inference paths have not yet run on a GPU (docs/attacks.md).
if [[ ${PRESET:-real} == toy ]]; then export ENABLE_ATTACKS=${ENABLE_ATTACKS:-1}; else export ENABLE_ATTACKS=${ENABLE_ATTACKS:-0}; fi
export DRY_RUN=${DRY_RUN:-0} WARM_START=${WARM_START:-1}
FORCE=()
for argument in "$@"; do
    case $argument in
        --force) FORCE=(--force) ;;
        *) echo "error: unknown argument '$argument'; the only argument is --force (settings are environment variables)" >&2
           exit 2 ;;
    esac
done
PLAN=(uv run --quiet "$REPO/experiment/plan.py")

# Every setting, flag, step name and model, checked before anything runs (one error line otherwise).
if [[ -z ${PIPELINE_ONE_SEED:-} ]]; then
    "${PLAN[@]}" check
fi
if [[ $PRESET == toy ]]; then
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # the organism never needs the hub
fi

# Several seeds: the whole study once per seed, each run by this script with SEED set, then one report
# over all of them (the per-seed runs leave the report to this one).
if [[ -n ${SEEDS:-} && -z ${PIPELINE_ONE_SEED:-} ]]; then
    MANIFESTS=()
    for seed in $SEEDS; do
        echo "==> Seed $seed of SEEDS=\"$SEEDS\""
        PIPELINE_ONE_SEED=1 SEED=$seed SEEDS= "$REPO/experiment/pipeline.sh" "$@"
        MANIFESTS+=(--manifest "$OUTPUT_ROOT/.manifests/seed$seed.tsv")
    done
    if [[ $DRY_RUN == 1 ]]; then exit 0; fi
    echo
    if [[ ${ENABLE_ATTACKS} == 1 ]]; then
        echo "==> Verdict over SEEDS=\"$SEEDS\""
        uv run --quiet "$REPO/experiment/verdict.py" --output-root "$OUTPUT_ROOT"
    fi
    echo "==> Report over SEEDS=\"$SEEDS\""
    uv run --quiet "$REPO/experiment/report.py" --preset "$PRESET" --output-root "$OUTPUT_ROOT" "${MANIFESTS[@]}"
    exit
fi

# The preset's models and data, unless already set in the environment.
eval "$("${PLAN[@]}" preset --preset "$PRESET" --seed "$SEED")"
export BASE FILTERED PRETRAIN UNLEARNED CB_MODEL BASELINE_MIN_FORGET_ACC

# What ran and what was skipped, across the preparation below and the steps (plan.py prints the summary).
export PIPELINE_LEDGER PIPELINE_STARTED
PIPELINE_LEDGER=$(mktemp "${TMPDIR:-/tmp}/brittle-pipeline.XXXXXX")
PIPELINE_STARTED=$(date +%s)
# Every forward pass the activation steps run is appended to BRITTLE_FORWARD_PASS_LOG and counted at the end.
export BRITTLE_FORWARD_PASS_LOG
BRITTLE_FORWARD_PASS_LOG=$(mktemp "${TMPDIR:-/tmp}/brittle-forward-passes.XXXXXX")
trap 'rm -f "$BRITTLE_FORWARD_PASS_LOG" "$PIPELINE_LEDGER"' EXIT

# run_step LABEL COMMAND...: run one preparation step, recording it in the summary (DRY_RUN: say it would).
run_step() {
    local label=$1
    shift
    if [[ $DRY_RUN == 1 ]]; then
        echo "  would run: $label"
        return
    fi
    echo
    echo "==> $label"
    local step_start=$SECONDS status=0
    "$@" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "error: '$label' failed (exit $status); fix the problem above and re-run: finished steps are skipped" >&2
        exit "$status"
    fi
    printf 'ran\t%s\t%s\n' "$label" "$((SECONDS - step_start))" >> "$PIPELINE_LEDGER"
}

skipped() {
    printf 'skipped\t%s\t\n' "$1" >> "$PIPELINE_LEDGER"
}

if [[ $DRY_RUN == 1 ]]; then
    echo "==> Dry run (PRESET=$PRESET, SEED=$SEED): nothing is run or written"
fi

# ---------------------------------------------------------------------------------------------
# Preparation (toy preset): the organism's data and models, then the unlearned models. Real models
# come from the hub.
# ---------------------------------------------------------------------------------------------
if [[ $PRESET == toy ]]; then
    if [[ -d data/toy ]]; then
        skipped "toy data"
    else
        run_step "toy data" uv run "$REPO/create_datasets.py" --preset toy
    fi
    if [[ -d $BASE && -d $FILTERED && -d $PRETRAIN ]]; then
        skipped "toy organism (seed $SEED)"
    else
        run_step "toy organism (seed $SEED)" uv run "$REPO/experiment/build_organism.py" --seed "$SEED"
    fi
fi

# make_unlearned_model VARIABLE METHOD: when VARIABLE (UNLEARNED or CB_MODEL) is empty, set it to the folder the
# unlearning runner reports for METHOD under the toy preset; when that model does not exist yet, add it to
# MAKE_MODELS: the study makes it as its first task (run_unlearn.sh METHOD), beside the steps of the other
# models, and every step of that model waits for it.
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
        skipped "toy $method model: $folder"
    else
        MAKE_MODELS="${MAKE_MODELS:+$MAKE_MODELS }$folder=$method"
    fi
    printf -v "$variable" '%s' "$folder"
}
export MAKE_MODELS=""

# ---------------------------------------------------------------------------------------------
# Pre-flight: the base model must know the forget facts before anything is unlearned or attacked.
# Step 0 of base runs first (it runs anyway) and the check reads it; without it, the check measures.
# ---------------------------------------------------------------------------------------------
if [[ $DRY_RUN == 1 ]]; then
    echo "  would run: Step 0 of Base first, then the pre-flight check (BASELINE_MIN_FORGET_ACC=$BASELINE_MIN_FORGET_ACC)"
else
    "${PLAN[@]}" run --stage preflight "${FORCE[@]}"
    preflight_status=0
    "${PLAN[@]}" preflight --model "$BASE" --task "$FORGET_TASK" --threshold "$BASELINE_MIN_FORGET_ACC" \
        --output-root "$OUTPUT_ROOT" || preflight_status=$?
    case $preflight_status in
        0) ;;
        3) run_step "pre-flight: $BASE" uv run "$REPO/experiment/relearn_attack.py" --model-a "$BASE" --preset "$PRESET" \
               --check-baseline-only --baseline-min-forget-acc "$BASELINE_MIN_FORGET_ACC" --device "$DEVICE" \
               --dtype "$DTYPE" --seed "$SEED" --output-root "$OUTPUT_ROOT" ;;
        *) exit "$preflight_status" ;;
    esac
fi

make_unlearned_model UNLEARNED cb_lat  # the default intervention: circuit breakers + latent adversarial training
if [[ $ENABLE_CB_COMPARISONS == 1 ]]; then
    make_unlearned_model CB_MODEL cb  # circuit breakers alone: the CB -> CB-LAT ablation chain
fi

# ---------------------------------------------------------------------------------------------
# The steps of experiment/steps.py for every model, comparison and attacked model, side by side where
# they are independent; then the report (unless a SEEDS run makes it after every seed) and the summary.
# ---------------------------------------------------------------------------------------------
"${PLAN[@]}" run --stage study "${FORCE[@]}"
if [[ -s $BRITTLE_FORWARD_PASS_LOG ]]; then
    awk -F'\t' '$1 == "computed" { computed += $2; seconds += $7 } $1 == "cached" { cached += 1 }
                $1 == "perturbed" { perturbed += $2; seconds += $7 } $1 == "lens" { lens += $6; lens_seconds += $7 }
                END { printf "Activation forward passes: %d over (model, split) texts, %d perturbed (Step 12); " \
                      "%d statistics passes read from the store; %.0f s in forward passes; " \
                      "%d tokens streamed for the tuned lens (%.0f s of lens training)\n", computed, perturbed, cached, seconds, lens, lens_seconds }' \
        "$BRITTLE_FORWARD_PASS_LOG"
fi
