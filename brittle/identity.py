"""What made a result: the models, data and settings a step folder or run records in `identity.json`.

A step may reuse (skip) an existing result only when the inputs recorded beside it match the inputs
of the request. Three kinds of input identify a result:

| input    | recorded                                               | compared                       |
|----------|--------------------------------------------------------|--------------------------------|
| model    | resolved folder or hub id + revision, per weight file: | the fingerprint (not the path: |
|          | size and a SHA-256 of its first and last MiB (which    | a copied model is the same     |
|          | holds a safetensors file's header); small files whole  | model, a different one with    |
|          |                                                        | the same folder name is not)   |
| data     | resolved path, SHA-256 of the whole file (or folder;   | the SHA-256                    |
|          | of a vision-language JSONL with its pictures)          |                                |
| settings | every flag that changes the numbers                    | all of them                    |

Beside them the record holds the environment (Python, every installed package's version, the GPU
model, driver and CUDA version when there is one), for reading, not for comparing: an upgraded
package does not invalidate a result, but the record says which versions made it.

Torch-free unless torch is already imported (unlearn.py names and skips runs without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IDENTITY_FILE = "identity.json"
EDGE_BYTES = 1 << 20  # a weight file is fingerprinted by its size and its first and last MiB
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Small files of a model folder that change what it computes: hashed whole.
MODEL_METADATA_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
# Flags that say where or how loudly a result is written, not what it is.
BOOKKEEPING_ARGUMENTS = frozenset({"force", "outdir", "output_root", "plot_dir", "device", "wandb_project",
                                   "wandb_name", "check_only", "print_outdir", "check_baseline_only", "cache_dir",
                                   "no_cache"})
# Text-file arguments of the steps and the preset field that is their default when unset.
STEP_DATA_ARGUMENTS = {"forget_text": "forget_text", "retain_text": "retain_text", "questions": "forget_questions"}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_file_fingerprint(path: Path) -> str:
    """Size + SHA-256 of the first and last MiB: cheap for 14 GB, and any retraining changes it.

    The first MiB of a safetensors file is its header (names, dtypes, shapes, offsets) and the first
    tensors; the last MiB the last tensors. Training moves every weight, so both ends change.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as file:
        digest.update(file.read(EDGE_BYTES))
        if size > EDGE_BYTES:
            file.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(file.read(EDGE_BYTES))
    return f"{size}:{digest.hexdigest()[:16]}"


def _folder_files(folder: Path) -> dict[str, str]:
    """{file name: fingerprint} for a model folder's weight and metadata files."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(WEIGHT_SUFFIXES) and path.is_file():
            files[path.name] = weight_file_fingerprint(path.resolve())
        elif path.name in MODEL_METADATA_FILES and path.is_file():
            files[path.name] = _sha256_file(path)[:16]
    return files


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def hub_snapshot(name: str) -> Path | None:
    """The local snapshot folder (`.../snapshots/<commit>`) of a cached hub model, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of brittle
        return None
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid hub id (a missing folder): the step's model check says so in one line
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def model_identity(name: str | Path) -> dict[str, Any]:
    """`{"source", "revision", "fingerprint", "files"}` of a local model folder or a (cached) hub model.

    `fingerprint` is what comparisons use; a hub model not in the local cache is identified by its id
    alone (revision None), which matches only another uncached reference to the same id.
    """
    name = str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        files = _folder_files(path)
        return {"source": str(path.resolve()), "revision": None, "fingerprint": _digest(files), "files": files}
    snapshot = hub_snapshot(name)
    files = _folder_files(snapshot) if snapshot else {}
    revision = snapshot.name if snapshot else None
    return {"source": name, "revision": revision, "fingerprint": _digest({"hub": name, "revision": revision,
                                                                          "files": files}), "files": files}


def content_fingerprint(*paths: str | Path) -> str:
    """Six hex digits of the files' contents, for folder names: other contents, another name."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:6]


def pictures_named(path: Path) -> dict[str, str | None]:
    """{image as written: SHA-256 (None when missing)} of the pictures that a JSONL file of vision-language
    records names in its `image` fields, resolved against the file's folder as `brittle.vlm.read_vl_records`
    does; {} for any other file (a line that is not a JSON object: not a record file; its reader reports it)."""
    if path.suffix != ".jsonl":
        return {}
    pictures: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:
            return {}
        image = record.get("image") if isinstance(record, dict) else None
        if isinstance(image, str) and image and image not in pictures:
            picture = path.parent / image  # an absolute `image` stays itself
            pictures[image] = _sha256_file(picture) if picture.is_file() else None
    return pictures


def data_identity(path: str | Path) -> dict[str, Any]:
    """`{"path", "sha256"}` of a data file, or of a folder (every file in it, by relative name).

    The SHA-256 of a file of vision-language records covers the pictures it names as well (`pictures_named`;
    their count is recorded as `pictures`): a repainted picture is other data, though the JSONL is the same.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        # Hidden files (staging leftovers) and recorded identities (they hold package versions) do not count.
        files = {str(file.relative_to(path)): _sha256_file(file) for file in sorted(path.rglob("*"))
                 if file.is_file() and file.name != IDENTITY_FILE
                 and not any(part.startswith(".") for part in file.relative_to(path).parts)}
        return {"path": str(path.resolve()), "sha256": _digest(files)}
    if not path.is_file():
        return {"path": str(path), "sha256": None}
    pictures = pictures_named(path)
    if pictures:
        return {"path": str(path.resolve()), "sha256": _digest({"records": _sha256_file(path), "pictures": pictures}),
                "pictures": len(pictures)}
    return {"path": str(path.resolve()), "sha256": _sha256_file(path)}


def plain(value: Any) -> Any:
    """`value` as JSON holds it (tuples -> lists, paths -> strings), so recorded and new settings compare."""
    return json.loads(json.dumps(value, default=str))


def gpu_description() -> dict[str, Any] | None:
    """The GPU(s) torch sees, the driver and the CUDA version; None without CUDA (or without torch loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    driver = None
    with contextlib.suppress(OSError, IndexError, subprocess.SubprocessError):
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.split()[0]
    return {"devices": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
            "driver": driver, "cuda": torch.version.cuda}


def environment() -> dict[str, Any]:
    """Python, platform, every installed package's version and the GPU: what a re-run must reproduce."""
    packages = {distribution.metadata["Name"]: distribution.version
                for distribution in importlib.metadata.distributions() if distribution.metadata["Name"]}
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": dict(sorted(packages.items(), key=lambda item: item[0].lower())), "gpu": gpu_description()}


@dataclass
class Identity:
    """The inputs of one result: models and data by role, and the settings."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Mapping[str, str | Path | None] = (), data: Mapping[str, str | Path | None] = (),
           settings: Mapping[str, Any] = ()) -> Identity:
        """Fingerprint `models` and `data` (roles with value None are left out) and keep `settings`."""
        expanded: dict[str, str | Path | None] = {}
        for role, paths in dict(data).items():  # a list of files: one role per file, `role[0]`, `role[1]`, ...
            if isinstance(paths, (list, tuple)):
                expanded.update({f"{role}[{index}]": path for index, path in enumerate(paths)})
            else:
                expanded[role] = paths
        return cls({role: model_identity(name) for role, name in dict(models).items() if name},
                   {role: data_identity(path) for role, path in expanded.items() if path},
                   plain(dict(settings)))

    @classmethod
    def from_arguments(cls, args: Any, models: Iterable[str] = (), data: Iterable[str] = (),
                       extra_data: Mapping[str, str | Path | None] = (), ignore: Iterable[str] = (),
                       **settings: Any) -> Identity:
        """A step's identity from its parsed arguments: the `models` and `data` arguments are fingerprinted,
        every other argument except the bookkeeping ones (`--force`, `--outdir`, `--device`, ...) and
        `ignore` is a setting; `extra_data` adds derived files, `settings` derived settings (e.g. the
        preset's task list)."""
        values = vars(args)
        models, data = list(models), list(data)
        left_out = BOOKKEEPING_ARGUMENTS | set(models) | set(data) | set(ignore)
        kept = {name: value for name, value in values.items() if name not in left_out}
        return cls.of({name: values.get(name) for name in models},
                      {**{name: values.get(name) for name in data}, **dict(extra_data)}, {**kept, **settings})

    def inputs(self) -> dict[str, Any]:
        """The compared part: model fingerprints, data hashes and settings."""
        return {"models": {role: model["fingerprint"] for role, model in self.models.items()},
                "data": {role: item["sha256"] for role, item in self.data.items()},
                "settings": self.settings}

    def record(self) -> dict[str, Any]:
        """What `identity.json` holds: the inputs in full, plus the environment."""
        return {"models": self.models, "data": self.data, "settings": self.settings, "environment": environment()}

    def differences(self, recorded: Mapping[str, Any] | None,
                    parts: Iterable[str] = ("models", "data", "settings")) -> list[str]:
        """Why a result recorded as `recorded` was not made by these inputs (empty: it was).

        `parts` limits the comparison, e.g. to `("models",)`: "was this made from the same model?".
        """
        if not isinstance(recorded, Mapping):
            return [f"it records no {IDENTITY_FILE} (made before results recorded their inputs, or unreadable)"]
        parts = set(parts)
        reasons = []
        for role, model in self.models.items() if "models" in parts else ():
            before = (recorded.get("models") or {}).get(role) or {}
            if before.get("fingerprint") != model["fingerprint"]:
                reasons.append(f"model {role} differs (recorded {before.get('source', 'none')}"
                               f"{'@' + before['revision'] if before.get('revision') else ''}, now "
                               f"{model['source']}{'@' + model['revision'] if model.get('revision') else ''})")
        recorded_models = set(recorded.get("models") or {}) if "models" in parts else set()
        reasons += [f"model {role} was an input then, not now" for role in sorted(recorded_models - set(self.models))]
        for role, item in self.data.items() if "data" in parts else ():
            before = (recorded.get("data") or {}).get(role) or {}
            if before.get("sha256") != item["sha256"]:
                reasons.append(f"{role} data differs (recorded {before.get('path', 'none')}, now {item['path']})")
        recorded_data = set(recorded.get("data") or {}) if "data" in parts else set()
        reasons += [f"{role} data was an input then, not now" for role in sorted(recorded_data - set(self.data))]
        before_settings = recorded.get("settings") or {}
        changed = [] if "settings" not in parts else sorted(name for name in set(before_settings) | set(self.settings)
                         if before_settings.get(name) != self.settings.get(name))
        if changed:
            reasons.append("settings differ: " + ", ".join(
                f"{name} {before_settings.get(name)!r} -> {self.settings.get(name)!r}" for name in changed[:4])
                + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""))
        return reasons


def step_identity(args: Any, *models: str, data: Mapping[str, str | Path | None] = (), **settings: Any) -> Identity:
    """The identity of a diagnostic step: the model arguments `models` (e.g. "model_a", "model_b"), its
    text files (`--forget-text`, `--retain-text`, `--questions`, or the preset's when unset), `data`
    (e.g. an earlier step's folder it reads) and every other argument as a setting."""
    from brittle.presets import get_preset

    values = vars(args)
    present = [name for name in STEP_DATA_ARGUMENTS if name in values]
    preset = get_preset(values["preset"], values.get("seed", 42)) if present and "preset" in values else None
    files = {name: values[name] or (getattr(preset, STEP_DATA_ARGUMENTS[name]) if preset else None)
             for name in present}
    return Identity.from_arguments(args, models=models, extra_data={**files, **dict(data)}, ignore=present,
                                   **settings)


def read_identity(folder: str | Path) -> dict[str, Any] | None:
    """The `identity.json` recorded in `folder`, or None when there is none (or it is unreadable)."""
    path = Path(folder) / IDENTITY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
