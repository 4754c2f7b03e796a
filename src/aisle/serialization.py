"""Checkpoints without pickles: weights and optimizer tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

_M = TypeVar("_M", bound=nn.Module)

__all__ = [
    "DamagedFileError",
    "excluded_prefixes",
    "load_checkpoint",
    "load_optimizer_state",
    "load_weights",
    "read_json",
    "read_tensors",
    "save_optimizer_state",
    "save_weights",
    "tensors_digest",
    "write_json",
    "write_tensors",
]


class DamagedFileError(ValueError):
    """A file aisle wrote no longer holds what was written (cut off, edited, or damaged on disk)."""


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a half file under the real name


def write_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic(p, lambda t: t.write_text(json.dumps(obj, indent=2, default=float)))
    return p


def read_json(path: str | Path) -> Any:
    """A JSON file aisle wrote; a cut-off or edited one is a :class:`DamagedFileError` naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{p} is damaged (not valid JSON: {e}); re-create it (re-train the run)") from e


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def write_tensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as safetensors, atomically, with their SHA-256 in the file's metadata."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {**(metadata or {}), "sha256": tensors_digest(state)}
    _atomic(p, lambda t: save_file(state, str(t), metadata=meta))
    return p


def _damaged(p: Path, why: str) -> DamagedFileError:
    return DamagedFileError(
        f"{p} is damaged ({why}): it cannot be used. Re-train the run (or the fold) that wrote it; "
        f"a checkpoint cannot be repaired"
    )


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file written by :func:`write_tensors` and check its SHA-256 (never unpickles).

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: cut off, not a safetensors file, no checksum, or the checksum does not match.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _damaged(p, f"not a complete safetensors file: {e}") from e
    if "sha256" not in meta:
        raise _damaged(p, "it has no checksum: written by another program or an older aisle")
    if tensors_digest(state) != meta["sha256"]:
        raise _damaged(p, "its contents do not match the checksum written with it")
    return state, meta


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None, exclude: tuple[str, ...] = ()
) -> Path:
    """``model.state_dict()`` as safetensors (contiguous CPU copies) with a checksum.

    Args:
        exclude: state-dict prefixes left out (frozen towers, identical to the run's ``template.safetensors``);
            they are recorded in the file's metadata so loading knows to take them from the template.
    """
    state = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if not k.startswith(exclude)
    }
    meta = {k: json.dumps(v) for k, v in {**(metadata or {}), "excluded": list(exclude)}.items()}
    return write_tensors(path, state, meta)


def load_weights(model: _M, path: str | Path, strict: bool = True) -> _M:
    """Load checksummed safetensors weights (never unpickles).

    A checkpoint saved with ``exclude`` leaves those parts of ``model`` as they are: load the run's template
    first (see :func:`load_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        DamagedFileError: the file is cut off or its checksum does not match.
        ValueError: the weights do not fit the model (names the missing / unexpected / reshaped keys).
    """
    p = Path(path)
    state, meta = read_tensors(p)
    own = model.state_dict()
    reshaped = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if reshaped:
        k = reshaped[0]
        raise ValueError(
            f"checkpoint {p} does not fit the model: {k} has shape {tuple(state[k].shape)}, the model "
            f"{tuple(own[k].shape)} ({len(reshaped)} such tensor(s)); it was written for another model or class list"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(json.loads(meta.get("excluded", "[]"))))]
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint {p} does not fit the model (written for another architecture?): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model


def excluded_prefixes(path: str | Path) -> list[str]:
    """The state-dict prefixes a checkpoint left out (taken from the run's template when loading)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise _damaged(Path(path), f"not a complete safetensors file: {e}") from e
    return json.loads(meta.get("excluded", "[]"))


def load_checkpoint(model: _M, path: str | Path, template: str | Path) -> _M:
    """Load a fold checkpoint into a freshly built model: the template first when the checkpoint left parts out."""
    if excluded_prefixes(path):
        load_weights(model, template)
    return load_weights(model, path)


def save_optimizer_state(opt: torch.optim.Optimizer, path: str | Path) -> None:
    """Optimizer tensors to ``path`` (safetensors) and the rest to ``path.json``."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{idx}.{key}"] = val.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = val
    p = Path(path)
    write_tensors(p, tensors)
    write_json(p.with_suffix(".json"), {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer_state(opt: torch.optim.Optimizer, path: str | Path) -> None:
    p = Path(path)
    meta = read_json(p.with_suffix(".json"))
    state: dict[int, dict[str, Any]] = {}
    for key, val in {**read_tensors(p)[0], **meta["scalars"]}.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
