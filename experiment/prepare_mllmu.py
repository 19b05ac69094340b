# /// script
# requires-python = ">=3.10"
# dependencies = ["brittle", "pillow>=10", "pyarrow>=15"]
#
# [tool.uv.sources]
# brittle = { path = "..", editable = true }
# ///
"""Convert a local MLLMU-Bench snapshot's forget/retain splits into the toolkit's vision-language records.

The real counterpart of the VL organism's data (docs/multimodal.md): MLLMU-Bench's `forget_15` and
`retain_85` splits (hub dataset MLLMMU/MLLMU-Bench) become, under `--out` (default data/mllmu):

    images/<ID>.png                          one portrait per profile
    forget_qa.jsonl, retain_qa.jsonl         training records {image, question, answer}
    questions/forget.jsonl, retain.jsonl     4-option questions about the portrait
    questions/forget_t.jsonl, forget_v.jsonl the forget profiles' questions in halves, for the relearning attack
    split.json                               sources, counts, the T/V profiles

The hub is not contacted: download the splits first (if the hub asks, accept the dataset's terms), then

    hf download MLLMMU/MLLMU-Bench --repo-type dataset --include 'forget_15/*' 'retain_85/*' --local-dir mllmu
    uv run experiment/prepare_mllmu.py --source mllmu

A finished conversion of the same files with the same settings is skipped; `--force` redoes it. Any
unreadable row (no image, a picture that cannot be decoded, a missing field) stops it with one line
naming the row, and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brittle.cli import run_cli
from brittle.identity import Identity
from brittle.mllmu import FORGET_SPLIT, RETAIN_SPLIT, convert_mllmu, split_files
from brittle.outputs import skip_if_complete

DEFAULT_OUT = "data/mllmu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="local MLLMU-Bench snapshot: the folder holding forget_15/ and retain_85/")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--forget-split", default=FORGET_SPLIT, help=f"forget split (default {FORGET_SPLIT})")
    parser.add_argument("--retain-split", default=RETAIN_SPLIT, help=f"retain split (default {RETAIN_SPLIT})")
    parser.add_argument("--seed", type=int, default=42, help="seed of the T/V split of the forget profiles")
    parser.add_argument("--force", action="store_true", help="convert again even if --out holds this conversion")
    args = parser.parse_args()

    # The splits' files are the data of this step: another download, another conversion.
    files = {role: split_files(args.source, split)
             for role, split in (("forget", args.forget_split), ("retain", args.retain_split))}
    identity = Identity.of(data=files, settings={"forget_split": args.forget_split,
                                                 "retain_split": args.retain_split, "seed": args.seed})
    if skip_if_complete(args.out, args.force, what="MLLMU-Bench conversion", identity=identity):
        return
    summary = convert_mllmu(args.source, Path(args.out), args.seed, args.forget_split, args.retain_split, identity)
    print(f"MLLMU-Bench {args.forget_split} / {args.retain_split}: {summary['profiles']['forget']} / "
          f"{summary['profiles']['retain']} profiles, {summary['questions']['forget']} / "
          f"{summary['questions']['retain']} questions about the portraits -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
