# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "pytest>=8", "streamlit>=1.45", "playwright>=1.45", "scikit-learn>=1.4",
#                 "scipy>=1.11", "peft>=0.13", "wandb>=0.18", "bitsandbytes>=0.46.1"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Run the whole test suite offline on the CPU: `uv run tests/run_tests.py [pytest arguments]`.

Tests build their own toy organism (about four minutes on two cores) in a temporary workspace and
drive the real scripts through `uv run`, exactly as a user would. Set BRITTLE_TEST_WORKSPACE to a
folder to keep that workspace between runs (the organism is then built only once).

    uv run tests/run_tests.py                 # everything
    uv run tests/run_tests.py -m "not slow"   # only the fast unit tests (seconds)
    uv run tests/run_tests.py -k pipeline -x  # pytest arguments pass through
"""

import os
import sys
from pathlib import Path

import pytest

# No hub, no GPU, no W&B, no progress-bar noise in captured output.
os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "CUDA_VISIBLE_DEVICES": "",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
})
# The scripts' `uv run` start-ups import torch: let Python cache that bytecode (see .ci/run).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

if __name__ == "__main__":
    # Run from the repository root, where pyproject.toml's testpaths = ["tests"] applies when no test
    # paths are given (paths given on the command line are relative to the root too).
    os.chdir(Path(__file__).resolve().parents[1])
    sys.exit(pytest.main(sys.argv[1:]))
