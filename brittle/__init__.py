"""Shared helpers that every script of the toolkit imports. One module, one job:

- `cli`: common flags and one-line user errors       - `outputs`: output folders, atomic writes, skipping
- `runtime`: device, dtype and seeding               - `models`: loading models and tokenizers
- `architecture`: layers, MLP/attention by name       - `texts`: forget/retain text files
- `training`: batches, NLL, optimizer and schedule    - `evaluation`: lm-eval (Step 0) and its summaries
- `presets`: the real and toy worlds                  - `organism`: the toy organism's invented facts
- `plotting`: per-layer figures                       - `tracking`: `.env` and optional W&B
"""
