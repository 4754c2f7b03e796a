"""``aisle train --preset cpu|gpu``: a portfolio of models on one set of folds, blended on their out-of-fold
predictions into one model.

Members (each a full run under ``<run>/members/<name>/``, trained on the same folds): the linear TF-IDF model with
the frozen image features beside its n-grams, a frozen pretrained text encoder with a head, a frozen image encoder
with a head and their fusion (features cached once and shared), then :func:`aisle.training.blend.fit_ensemble` at
the run folder's root. When the table has no images the linear member reads text alone and the members that need
images are left out. Pretrained members name hub models; ``models_dir`` points them at
local folders of the same names instead (offline: ``--models-dir ../shared/models``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aisle.config import AisleConfig, config_to_dict, validate_config
from aisle.data.prepare import load_source
from aisle.locking import hold_run_dir
from aisle.models.factory import check_tower_names, check_tower_weights
from aisle.registry import Registry
from aisle.rundir import RunDir
from aisle.training.blend import fit_ensemble
from aisle.training.cv import prepare_run_dir, run_cv
from aisle.training.tracking import check_loggers

__all__ = ["PRESETS", "Member", "blend_members", "run_portfolio"]

log = logging.getLogger(__name__)

PRESETS: Registry = Registry("preset")


@dataclass(frozen=True)
class Member:
    """One member of a preset: its model and train sections (the data and runtime sections are the user's)."""

    name: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    images: bool = False  # needs product images
    without_images: dict[str, Any] | None = None  # its model when the table has no images (else it is left out)

    def config(self, base: AisleConfig, run: RunDir) -> AisleConfig:
        """The member's config: the user's data and runtime; train keys the user set win over the preset's."""
        raw = config_to_dict(base)
        user = {k: raw["train"][k] for k in base.train.model_fields_set if k != "stages"}
        raw.update(
            name=f"{base.name}-{self.name}",
            output_dir=str(run.members),
            model=self.model,
            train={**raw["train"], "stages": [], **self.train, **user},
        )
        return validate_config(raw, f"preset member {self.name!r}")


def _towers(models_dir: str | Path | None, image: str, text: str) -> tuple[str, str]:
    """Tower names: hub names, or the folders of the same last name under ``models_dir``."""
    if models_dir is None:
        return f"timm:{image}", f"hf:{text}"
    root = Path(models_dir).resolve()
    return f"timm:local-dir:{root / image}", f"hf:{root / text.rsplit('/', 1)[-1]}"


# The blend is held to macro-F1, so the heads weigh rare classes up: 1/sqrt(class count) gave the frozen text,
# image and fusion heads +1.6 to +1.9 points of out-of-fold macro-F1 on a 6,000-row, 84-class fashion subset
# (README "Why fusion lost on small catalogues"); on balanced classes the weights are all 1.
_HEAD = {
    "epochs": 20,
    "batch_size": 64,
    "lr": {"default": 1e-3},
    "label_smoothing": 0.1,
    "early_stopping_patience": 5,
    "class_weights": "inverse_sqrt",
}


def _linear_member(image: str, image_size: int) -> Member:
    """TF-IDF + LinearSVC with the frozen image features beside the n-grams, their weight chosen per fold (0: text
    alone); text alone when the table has no images."""
    tower = {"name": image, "pretrained": True, "trainable": False}
    with_image = {"type": "linear", "image": tower, "image_size": image_size}
    return Member("linear", with_image, images=True, without_images={"type": "linear"})


def _frozen_members(image: str, text: str, image_size: int, max_length: int) -> list[Member]:
    frozen = {"pretrained": True, "trainable": False}
    image_tower = {"name": image, **frozen}
    text_tower = {"name": text, **frozen, "pooler": "mean", "max_length": max_length}
    head = {"head_hidden": 512, "dropout": 0.2}
    return [
        Member("text", {"type": "text", "text": text_tower, **head}, _HEAD),
        Member("image", {"type": "image", "image": image_tower, "image_size": image_size, **head}, _HEAD, True),
        Member(
            "fusion",
            {
                "type": "fusion",
                "image": image_tower,
                "text": text_tower,
                "image_size": image_size,
                "fusion": "concat",
                **head,
            },
            _HEAD,
            True,
        ),
    ]


@PRESETS.register("cpu")
def cpu_preset(models_dir: str | Path | None = None) -> list[Member]:
    """Small towers that a CPU encodes in minutes: EfficientNet-Lite0 (224 px) and all-MiniLM-L6-v2."""
    image, text = _towers(models_dir, "tf_efficientnet_lite0", "sentence-transformers/all-MiniLM-L6-v2")
    return [_linear_member(image, 224), *_frozen_members(image, text, 224, 256)]


@PRESETS.register("gpu")
def gpu_preset(models_dir: str | Path | None = None) -> list[Member]:
    """Larger towers for a GPU: ConvNeXt-Tiny (ImageNet-22k) and all-mpnet-base-v2, frozen, with heads."""
    image, text = _towers(models_dir, "convnext_tiny.fb_in22k", "sentence-transformers/all-mpnet-base-v2")
    return [_linear_member(image, 224), *_frozen_members(image, text, 224, 256)]


def _warn_unused(cfg: AisleConfig, preset: str) -> None:
    """One warning naming the config's settings that a preset replaces with its own: its model section and stages."""
    changed = cfg.model.model_dump() != type(cfg.model)().model_dump()  # set away from the defaults
    unused = [f"the model section (model.type: {cfg.model.type})"] if changed else []
    if cfg.train.stages:
        unused.append("train.stages")
    if unused:
        log.warning(
            "--preset %s trains its own models, so these settings of the config are not used: %s; train without "
            "--preset to use them",
            preset,
            ", ".join(unused),
        )


def run_portfolio(
    cfg: AisleConfig,
    preset: str,
    run_dir: str | Path | None = None,
    models_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Train every member of ``preset`` on ``cfg``'s data and folds, then blend them into ``run_dir``.

    Running it again on an unfinished portfolio folder goes on where it stopped (finished members are kept).

    Returns:
        The ensemble's summary (``cv_summary.json`` of the run folder), with each member's out-of-fold scores.

    Raises:
        FileExistsError: the folder holds a finished portfolio or another run (pass ``overwrite``).
    """
    _warn_unused(cfg, preset)
    members: list[Member] = PRESETS.create(preset, models_dir)
    rd = RunDir(run_dir if run_dir is not None else Path(cfg.output_dir) / cfg.name)
    has_images = any(len(p) for p in load_source(cfg.data, require_label=True).image_paths)
    if not has_images:  # members with a text-only form take it; the others are left out
        members = [replace(m, model=m.without_images, images=False) if m.without_images else m for m in members]
    configs = {m.name: m.config(cfg, rd) for m in members}  # every member's config is checked before any work
    chosen = [m for m in members if has_images or not m.images]
    if len(chosen) < len(members):
        log.info("no product has an image: the preset leaves out %s", [m.name for m in members if m not in chosen])
    for m in chosen:  # a tower name timm does not know, or a missing --models-dir folder, fails before any work
        check_tower_names(configs[m.name].model)
        check_tower_weights(configs[m.name].model)
        check_loggers(configs[m.name].train.loggers)
    with hold_run_dir(rd):  # one writer per portfolio folder (each member's run_cv also locks its own)
        if overwrite or not rd.members.is_dir() or rd.is_ensemble():
            prepare_run_dir(cfg, rd, overwrite)
        runs = []
        for m in chosen:
            member_dir = RunDir(rd.members / m.name)
            if not member_dir.is_finished():
                log.info("preset %s: training member %s", preset, m.name)
                run_cv(configs[m.name], member_dir.root, resume=member_dir.is_run(), overwrite=not member_dir.is_run())
            runs.append(member_dir.root)
        return blend_members(runs, rd.root, [m.name for m in chosen])


def blend_members(runs: list[Path], out: Path, names: list[str]) -> dict:
    """The preset's blend of its members' runs into ``out``: equal weights over the best member and its peers, held
    to the best member's macro-F1 (``fit_ensemble``'s ``peers``). On 20 fashion-products subsets, cross-fitted, it
    was below TF-IDF + LinearSVC on 4 (worst -0.27 points) where bagged selection was on 5 (worst -0.62)
    (``benchmarks/blend_methods.py``, README "How the preset weighs its members")."""
    return fit_ensemble(runs, out, metric="log_loss", names=names, method="peers")
