"""Secrets from `.env`, and optional Weights & Biases logging.

W&B is strictly optional: with no `WANDB_API_KEY` (or `WANDB_MODE=disabled`) every function here
is a no-op and nothing fails. Secrets are read into the environment, never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dotenv import find_dotenv, load_dotenv


def load_environment() -> None:
    """Load `.env` (searched upwards from the working directory) without overriding set variables."""
    load_dotenv(find_dotenv(usecwd=True), override=False)


def wandb_enabled() -> bool:
    """True when a W&B key is configured and W&B is not disabled."""
    load_environment()
    if os.environ.get("WANDB_MODE", "").lower() == "disabled" or not os.environ.get("WANDB_API_KEY"):
        return False
    try:
        import wandb  # noqa: F401
    except ImportError:
        print("note: WANDB_API_KEY is set but the wandb package is not installed; not logging to W&B")
        return False
    return True


def log_to_wandb(project: str | None, run_name: str, config: Mapping[str, Any], metrics: Mapping[str, Any],
                 job_type: str = "eval") -> None:
    """Log one finished run (config + final metrics) to W&B, if enabled."""
    if not wandb_enabled():
        return
    import wandb

    run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "brittle-unlearning"),
                     entity=os.environ.get("WANDB_ENTITY") or None, name=run_name, config=dict(config),
                     job_type=job_type, reinit=True)
    run.log(dict(metrics))
    run.summary.update(dict(metrics))
    run.finish()


def finished_wandb_run_exists(project: str | None, run_name: str) -> bool:
    """True when W&B already holds a *finished* run called `run_name` (False when W&B is off)."""
    if not wandb_enabled():
        return False
    import wandb

    entity = os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    path = f"{entity}/{project or os.environ.get('WANDB_PROJECT', 'brittle-unlearning')}"
    try:
        runs = wandb.Api().runs(path, filters={"display_name": run_name, "state": "finished"})
        return len(runs) > 0
    except Exception as error:  # network or permission problems must not block a run
        print(f"note: could not query W&B for {run_name} ({type(error).__name__}); assuming not finished")
        return False
