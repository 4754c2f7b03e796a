"""Checkpoints without pickles: weights and optimizer tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

_M = TypeVar("_M", bound=nn.Module)

__all__ = [
    "excluded_prefixes",
    "load_checkpoint",
    "load_optimizer_state",
    "load_weights",
    "read_json",
    "save_optimizer_state",
    "save_weights",
    "write_json",
]


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
    return json.loads(Path(path).read_text())


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None, exclude: tuple[str, ...] = ()
) -> Path:
    """``model.state_dict()`` as safetensors (contiguous CPU copies).

    Args:
        exclude: state-dict prefixes left out (frozen towers, identical to the run's ``template.safetensors``);
            they are recorded in the file's metadata so loading knows to take them from the template.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if not k.startswith(exclude)
    }
    meta = {k: json.dumps(v) for k, v in {**(metadata or {}), "excluded": list(exclude)}.items()}
    _atomic(p, lambda t: save_file(state, str(t), metadata=meta))
    return p


def load_weights(model: _M, path: str | Path, strict: bool = True) -> _M:
    """Load safetensors weights (never unpickles).

    A checkpoint saved with ``exclude`` leaves those parts of ``model`` as they are: load the run's template
    first (see :func:`load_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the weights do not fit the model (names the missing / unexpected keys).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    state = load_file(str(p))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(excluded_prefixes(p)))]
    if strict and (missing or unexpected):
        raise ValueError(f"checkpoint {p} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def excluded_prefixes(path: str | Path) -> list[str]:
    """The state-dict prefixes a checkpoint left out (taken from the run's template when loading)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
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
    _atomic(p, lambda t: save_file(tensors, str(t)))
    write_json(p.with_suffix(".json"), {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer_state(opt: torch.optim.Optimizer, path: str | Path) -> None:
    p = Path(path)
    meta = read_json(p.with_suffix(".json"))
    state: dict[int, dict[str, Any]] = {}
    for key, val in {**load_file(str(p)), **meta["scalars"]}.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
