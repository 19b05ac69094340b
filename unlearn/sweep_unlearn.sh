#!/usr/bin/env bash
# A hyperparameter grid over all twelve methods: learning rates x each method's key hyperparameter
# (the seed's tuning guide). NO_SAVE=1 by default: every configuration is trained and evaluated, and
# only its results are kept (unlearned_models/<run>/evals, unlearn_run.json), not the weights.
#
#   ./unlearn/sweep_unlearn.sh                                   # real preset: 102 configurations
#   PRESET=toy ./unlearn/sweep_unlearn.sh                        # the toy organism's grid
#   ./unlearn/parallel_sweep.sh ./unlearn/sweep_unlearn.sh       # the same, fanned out over GPU groups
#   METHODS="npo cb_lat" LRS="5e-6 1e-5" ./unlearn/sweep_unlearn.sh
#   uv run unlearn/analysis/analyze_runs.py                      # then rank the finished runs
#
# Settings (environment variables): PRESET, SEED, BASE and every run_unlearn.sh variable pass through.
#   METHODS   methods to sweep (default: the seed's twelve; rapidun is also known)
#   LRS       learning rates (default: real 5e-6 1e-5 3e-5; toy 3e-4 1e-3 3e-3)
#   GRID_<METHOD>   override one method's grid, e.g. GRID_npo="BETA=0.05 0.2" or GRID_ga_simple=""
#   NO_SAVE   default 1 (set NO_SAVE=0 to keep every model's weights)
#
# Idempotent: run_unlearn.sh skips configurations that already finished, so an interrupted sweep
# resumes where it stopped. Each run goes through "${RUN_UNLEARN:-./unlearn/run_unlearn.sh}", which
# parallel_sweep.sh points at its GPU-group dispatcher; this file is never modified.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_UNLEARN=${RUN_UNLEARN:-$REPO/unlearn/run_unlearn.sh}

export PRESET=${PRESET:-real}
export NO_SAVE=${NO_SAVE:-1}
METHODS=${METHODS:-"ga_simple ga grad_diff dpo npo simnpo rmu cb lat cb_lat wt_dist wt_dist_reg"}
case $PRESET in
    toy) LRS=${LRS:-"3e-4 1e-3 3e-3"} ;;
    *) LRS=${LRS:-"5e-6 1e-5 3e-5"} ;;
esac

# Each method's key hyperparameter and its values ("" = learning rate only). What to turn when a
# method collapses or does not unlearn enough: the seed's "Hyperparameter Defaults & Tuning Guide".
declare -A GRID=(
    [ga_simple]=""
    [ga]="RETAIN_WEIGHT=1.0 2.0 5.0"
    [grad_diff]="FORGET_WEIGHT=0.5 1.0 2.0"
    [dpo]="BETA=0.05 0.1 0.5"
    [npo]="BETA=0.05 0.1 0.5"
    [simnpo]="BETA=0.05 0.1 0.5"
    [rmu]="ALPHA=10.0 100.0 1000.0"
    [cb]="ALPHA=10.0 100.0 1000.0"
    [lat]="LAT_EPS=0.05 0.1 0.5"
    [cb_lat]="ALPHA=10.0 100.0 1000.0"
    [wt_dist]="WT_NOISE_STD=0.01 0.02 0.05"
    [wt_dist_reg]="WT_REG_LAMBDA=0.01 0.1 1.0"
    [rapidun]="DESCENT_BETA=0.5 1.0 2.0"  # not in the default METHODS: METHODS="rapidun" ./unlearn/sweep_unlearn.sh
)

# The organism's own scales (brittle/presets.py): alpha = 100 anchors a 4-layer model so hard that nothing
# is forgotten, and its weights need more noise than 0.02 to lose anything.
if [[ $PRESET == toy ]]; then
    GRID[rmu]="ALPHA=0.3 1.0 3.0"
    GRID[cb]="ALPHA=0.3 1.0 3.0"
    GRID[cb_lat]="ALPHA=0.3 1.0 3.0"
    GRID[wt_dist]="WT_NOISE_STD=0.05 0.1 0.2"
    GRID[wt_dist_reg]="WT_REG_LAMBDA=0.01 0.03 0.1"
fi

configurations=0
failures=()
# run METHOD [VARIABLE=VALUE ...]: one configuration through the runner; a failure does not stop the sweep.
run() {
    local method=$1
    shift
    configurations=$((configurations + 1))
    echo "==> [$configurations] $method $*"
    if ! env "$@" "$RUN_UNLEARN" "$method"; then
        failures+=("$method $*")
    fi
}

for method in $METHODS; do
    if [[ -z ${GRID[$method]+set} ]]; then
        echo "error: unknown method '$method' in METHODS; choose from: ${!GRID[*]}" >&2
        exit 2
    fi
    override=GRID_$method
    grid=${!override-${GRID[$method]}}
    for lr in $LRS; do
        if [[ -z $grid ]]; then
            run "$method" "LR=$lr"
            continue
        fi
        variable=${grid%%=*}
        for value in ${grid#*=}; do
            run "$method" "LR=$lr" "$variable=$value"
        done
    done
done

echo
echo "==> Sweep finished: $configurations configuration(s), ${#failures[@]} failed (PRESET=$PRESET, NO_SAVE=$NO_SAVE)"
for failure in "${failures[@]+"${failures[@]}"}"; do echo "  failed: $failure"; done
echo "Rank the results: uv run unlearn/analysis/analyze_runs.py --preset $PRESET"
[[ ${#failures[@]} -eq 0 ]]
