#!/usr/bin/env bash
# Make the default set of unlearned models (`uv run unlearn/unlearn.py --list-methods`: the deep-ignorance
# study's twelve) with the preset's default hyperparameters (weights kept).
#
#   ./unlearn/create_all_unlearning_models.sh                 # real preset (GPUs)
#   PRESET=toy ./unlearn/create_all_unlearning_models.sh      # the toy organism (CPU, minutes)
#   ./unlearn/parallel_sweep.sh ./unlearn/create_all_unlearning_models.sh
#
# Settings: METHODS (default: the default set; `--list-methods all` adds rapidun); every run_unlearn.sh variable passes through (PRESET, SEED,
# BASE, NO_EVAL, ...). Finished models are skipped. Each run goes through
# "${RUN_UNLEARN:-./unlearn/run_unlearn.sh}" (parallel_sweep.sh replaces it with its dispatcher).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_UNLEARN=${RUN_UNLEARN:-$REPO/unlearn/run_unlearn.sh}
METHODS=${METHODS:-$(uv run --quiet "$REPO/unlearn/unlearn.py" --list-methods)}

timings=()
failures=()
for method in $METHODS; do
    echo "==> $method"
    start=$SECONDS
    if "$RUN_UNLEARN" "$method"; then
        timings+=("$method $((SECONDS - start)) s")
    else
        failures+=("$method")
    fi
done

echo
echo "==> Made ${#timings[@]} unlearned model(s) (PRESET=${PRESET:-real}); wall-clock time each:"
for timing in "${timings[@]+"${timings[@]}"}"; do echo "  - $timing"; done
for failure in "${failures[@]+"${failures[@]}"}"; do echo "  failed: $failure"; done
echo "Compare them: uv run unlearn/analysis/analyze_runs.py --preset ${PRESET:-real}"
[[ ${#failures[@]} -eq 0 ]]
