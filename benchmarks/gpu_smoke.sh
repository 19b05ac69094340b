#!/usr/bin/env bash
# GPU smoke test of the toolkit at the real 6.9B shape. NOT YET RUN ON A GPU: its time and memory columns are
# unknown; what follows is a plan. No hub, no internet: a random-init GPT-NeoX (hidden 4096, 32 layers, 32 heads,
# intermediate 16384, vocabulary 50304, 6.86B parameters) and random tokens, through the toolkit's own code.
#
#   ./benchmarks/gpu_smoke.sh                    # on a GPU machine (one H100 80 GB, >= ~128 GB host RAM)
#   SMOKE_SHAPE=tiny ./benchmarks/gpu_smoke.sh   # rehearsal on the CPU, every line at a tiny shape
#   SMOKE_WORKDIR=/scratch/smoke ./benchmarks/gpu_smoke.sh   # where the two 13.7 GB models go (default: a temp dir)
#
# Lines (benchmarks/gpu_smoke.py has the details), a table of peak GPU memory, s/step and pass/fail at the end:
#   ga_bf16      5 `ga` steps, fp32 weights + AdamW, bf16 compute, one-GPU config (FSDP2, CPU offload);
#                pass: >= 90% of one MLP matrix changed and its |ΔW| within 5% of ga_fp32's
#   ga_fp32      the same 5 steps in fp32 compute (the reference)
#   cb_lat       3 `cb_lat` steps, one-GPU config (forward hooks, LAT's adversary)
#   wt_dist_reg  3 `wt_dist_reg` steps, one-GPU config (θ_pre sharded like θ, on the CPU with it)
#   relearn      10 relearning-attack steps (T answers of 1,024 tokens), then 64 four-option V questions of
#                1,024 tokens scored, one-GPU config (experiment/relearn_attack.py's attack_once)
#   step1        Step 1 (experiment/collect_weight_comparison.py) on (model, perturbed copy)
#   step0        Step 0 through lm-eval (brittle.evaluation.evaluate_model) on a small local task
#
# Planned time on one H100 80 GB (estimated, not measured): ~7 minutes.
#   Compute: a training step of 2 texts × 512 tokens is 6 · 6.86e9 · 1,024 ≈ 4.2e13 FLOP (+1/3 with gradient
#   checkpointing), 0.1 s at a sustained 400 TFLOP/s in bf16 (16 steps: negligible; fp32 compute ~10× slower,
#   still ~1 s a step); the attack's 10 steps of 1,024 tokens are the same; scoring 74 questions of 1,024 tokens
#   is 2 · 6.86e9 · 76k ≈ 1e15 FLOP, ~3 s.
#   What dominates is the one-GPU config's offload: each step moves the fp32 weights to the GPU twice (forward,
#   backward: 2 × 27.5 GB) and the fp32 gradients back (27.5 GB) over PCIe (~25 GB/s: ~3.3 s), and AdamW steps
#   6.86B fp32 parameters on the CPU (reads and writes ~190 GB: ~4 s at ~50 GB/s). So ~8 s per full-parameter
#   step: ga_bf16 + ga_fp32 + wt_dist_reg + relearn = 23 steps ≈ 3 min; cb_lat trains layers 0-7 and the
#   embeddings (1.8B), ~3 s a step. Building, saving and loading: prepare writes 2 × 13.7 GB (~30 s), each of
#   the 7 lines starts a Python process and builds or loads the model (~20 s each: ~2.5 min), Step 1 reads both
#   models and runs power iterations on 130 weight matrices and 96 q/k/v parts (~30 s). Total ≈ 7 min, with no
#   margin for a slow disk or a slow CPU AdamW; if it runs over, the table says where.
#
# Without uv (e.g. a bare GPU machine) it runs python3 with the repository on PYTHONPATH; that Python needs
# torch, transformers, accelerate, tokenizers, peft and lm-eval.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shape=${SMOKE_SHAPE:-6.9b}
if command -v uv >/dev/null 2>&1; then
    python=(uv run --quiet "$REPO/benchmarks/gpu_smoke.py")
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
    python=(python3 "$REPO/benchmarks/gpu_smoke.py")
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    config=$REPO/unlearn/accelerate/fsdp2_1gpu_offload.yaml
else
    config=$REPO/unlearn/accelerate/cpu_gloo.yaml
    echo "no GPU: rehearsing on the CPU with $(basename "$config")"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ -n ${SMOKE_WORKDIR:-} ]]; then
    workdir=$SMOKE_WORKDIR
    mkdir -p "$workdir"
    rm -f "$workdir/results.jsonl"
else
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/gpu_smoke.XXXXXX")
    trap 'rm -rf "$workdir"' EXIT
fi
start=$SECONDS
echo "== prepare ($workdir)"
"${python[@]}" prepare --shape "$shape" --workdir "$workdir"
for line in ga_bf16 ga_fp32 cb_lat wt_dist_reg relearn; do  # under the one-GPU config, as run_unlearn.sh runs them
    echo "== $line"
    NUM_PROCESSES=1 ACCELERATE_CONFIG=$config "${python[@]}" "$line" --shape "$shape" --workdir "$workdir" \
        || echo "$line failed"
done
for line in step1 step0; do  # one plain process, as their scripts run
    echo "== $line"
    "${python[@]}" "$line" --shape "$shape" --workdir "$workdir" || echo "$line failed"
done
echo
echo "GPU smoke test, shape $shape, $((SECONDS - start)) s in all"
"${python[@]}" table --shape "$shape" --workdir "$workdir"
