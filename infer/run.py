# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "streamlit>=1.45"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Launch the web UI that compares models side by side: `uv run infer/run.py`, then open the URL it prints.

    uv run infer/run.py                 # http://localhost:8501, reachable from this machine only
    uv run infer/run.py --port 8600     # another port

Run it from the repository root: the app offers the models under `models/` and `unlearned_models/` and
the example questions under `data/` of the working directory. On a remote GPU machine, forward the port
(`ssh -L 8501:localhost:8501 gpu-host`) rather than exposing the app to the network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamlit.web import cli as streamlit_cli

from brittle.cli import run_cli

APP = Path(__file__).resolve().with_name("app.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--address", default="localhost",
                        help="address to bind (default localhost: only this machine can connect)")
    args = parser.parse_args()
    sys.exit(streamlit_cli.main([
        "run", str(APP),
        "--server.address", args.address,
        "--server.port", str(args.port),
        "--server.headless", "true",  # print the URL instead of trying to open a browser here
        "--server.fileWatcherType", "none",  # no reloading on edits (watching torch's modules only makes noise)
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button: this is a local research tool
    ], prog_name="streamlit"))


if __name__ == "__main__":
    run_cli(main)
