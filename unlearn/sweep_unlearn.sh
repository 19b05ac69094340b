#!/usr/bin/env bash
# A hyperparameter grid over the default methods: learning rates x each method's key hyperparameter (the
# grids are on the method cards, brittle/catalogue.py). NO_SAVE=1 by default: every configuration is trained
# and evaluated, and only its results are kept (unlearned_models/<run>/evals, unlearn_run.json), not the weights.
#
#   ./unlearn/sweep_unlearn.sh                                   # real preset: 102 configurations
#   PRESET=toy ./unlearn/sweep_unlearn.sh                        # the toy organism's grid
#   ./unlearn/parallel_sweep.sh ./unlearn/sweep_unlearn.sh       # the same, fanned out over GPU groups
#   METHODS="npo cb_lat" LRS="5e-6 1e-5" ./unlearn/sweep_unlearn.sh
#   uv run unlearn/unlearn.py --sweep-grid npo --preset toy      # one method's grid, as this script runs it
#   uv run unlearn/analysis/analyze_runs.py                      # then rank the finished runs
#
# Settings (environment variables): PRESET, SEED, BASE and every run_unlearn.sh variable pass through.
#   METHODS   methods to sweep (default: `uv run unlearn/unlearn.py --list-methods`; rapidun is also known)
#   LRS       learning rates (default: the catalogue's for the preset)
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
catalogue() { uv run --quiet "$REPO/unlearn/unlearn.py" --preset "$PRESET" "$@"; }
METHODS=${METHODS:-$(catalogue --list-methods)}

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
    # The catalogue's grid: "LR=<rates>" and, for most methods, one "VARIABLE=<values>" line.
    grid_lines=$(catalogue --sweep-grid "$method") || exit 2  # an unknown method is its one-line error
    lr_line=$(head -n 1 <<<"$grid_lines")
    grid=$(tail -n +2 <<<"$grid_lines")
    override=GRID_$method
    grid=${!override-$grid}
    for lr in ${LRS:-${lr_line#LR=}}; do
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
