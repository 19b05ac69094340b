"""Secrets from `.env`, and optional Weights & Biases logging.

W&B is strictly optional: with no `WANDB_API_KEY` (or `WANDB_MODE=disabled`) every function here
is a no-op and nothing fails. When W&B is configured but cannot log (a wrong key, no network), one
`note:` line says so and the run goes on: its results are already on disk. W&B's own waits are cut
to `WANDB_INIT_TIMEOUT` seconds (default 30). Secrets are read into the environment, never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dotenv import find_dotenv, load_dotenv

DEFAULT_INIT_TIMEOUT_SECONDS = 30


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


def init_timeout() -> float:
    """How long W&B may take to start a run or answer a query (`WANDB_INIT_TIMEOUT`, default 30 s)."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT_SECONDS))
    except ValueError:
        return DEFAULT_INIT_TIMEOUT_SECONDS


def wandb_project(project: str | None) -> str:
    return project or os.environ.get("WANDB_PROJECT", "brittle-unlearning")


def log_to_wandb(project: str | None, run_name: str, config: Mapping[str, Any], metrics: Mapping[str, Any],
                 job_type: str = "eval") -> None:
    """Log one finished run (config + final metrics) to W&B, if enabled; a `note:` line if W&B cannot."""
    if not wandb_enabled():
        return
    import wandb

    try:
        run = wandb.init(project=wandb_project(project), entity=os.environ.get("WANDB_ENTITY") or None,
                         name=run_name, config=dict(config), job_type=job_type, reinit=True,
                         settings=wandb.Settings(init_timeout=init_timeout(), silent=True))
        run.log(dict(metrics))
        run.summary.update(dict(metrics))
        run.finish()
    except Exception as error:  # a bad key, no network, a full W&B quota: the results on disk stand
        print(f"note: could not log to W&B ({type(error).__name__}); the results are on disk only. "
              "Check WANDB_API_KEY (or set WANDB_MODE=disabled)")


def finished_wandb_run_exists(project: str | None, run_name: str) -> bool:
    """True when W&B already holds a *finished* run called `run_name` (False when W&B is off or unreachable)."""
    if not wandb_enabled():
        return False
    import wandb

    try:
        api = wandb.Api(timeout=int(init_timeout()))
        entity = os.environ.get("WANDB_ENTITY") or api.default_entity
        runs = api.runs(f"{entity}/{wandb_project(project)}", filters={"display_name": run_name, "state": "finished"})
        return len(runs) > 0
    except Exception as error:  # network or permission problems must not block a run
        print(f"note: could not query W&B for {run_name} ({type(error).__name__}); assuming not finished")
        return False
