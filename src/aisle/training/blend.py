"""Ensembles fitted on out-of-fold predictions: bagged greedy ensemble selection (Caruana et al., 2004, 2006).

Every member is a finished run trained on the same rows with the same folds, so each product has one out-of-fold
probability row per member, made by a model that never saw it. Each member is calibrated (one scale on its
log-probabilities), members without signal are left out, and greedy selection with replacement runs on bootstrap
samples of the rows; the weights are the average pick shares (see :func:`ensemble_weights`). The ensemble folder is
shaped like a run folder (``cv_summary.json``, ``ensemble/oof.csv``, ``label_map.json``, ``config.yaml``), so
``predict`` and ``report`` take it like a run.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from aisle.data.folds import TRAIN_ONLY
from aisle.data.labels import LabelMap
from aisle.evaluation.calibration import fit_logit_scale, rescale_probs
from aisle.evaluation.metrics import classification_metrics, macro_f1
from aisle.locking import hold_run_dir
from aisle.rundir import ENSEMBLE_STAGE, RunDir
from aisle.serialization import read_json, write_json
from aisle.tables import read_numeric_table, write_table

__all__ = [
    "BlendMethod",
    "BlendMetric",
    "Member",
    "ensemble_weights",
    "fit_ensemble",
    "greedy_selection",
    "guarded_weights",
    "held_peer_weights",
    "peer_weights",
    "read_member",
]

BlendMetric = Literal["log_loss", "macro_f1"]
BlendMethod = Literal["select", "peers"]  # bagged ensemble selection on the metric; equal weights over the peers

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One finished run's out-of-fold probabilities, rows in ``ids`` order."""

    name: str
    rd: RunDir
    ids: np.ndarray
    folds: np.ndarray
    probs: np.ndarray  # (N, C)
    scale: float = 1.0  # its calibration (see aisle.evaluation.calibration), fitted when it joins an ensemble


def _score(probs: np.ndarray, y: np.ndarray, metric: BlendMetric) -> float:
    """Higher is better: macro-F1, or the negative log-loss."""
    if metric == "macro_f1":
        return macro_f1(y, probs.argmax(1))
    return float(_row_loglik(probs, y).mean())


def greedy_selection(
    probs: Sequence[np.ndarray], y: np.ndarray, metric: BlendMetric = "log_loss", rounds: int = 50
) -> tuple[np.ndarray, list[int], float]:
    """Caruana's forward selection with replacement on one set of rows.

    For ``log_loss`` the uniform distribution is one more candidate (the last weight): mixing in a little of it
    is how a blend of over-confident members gets smoother, and it does that better than any member of random
    probabilities could (log is concave). It does not move any row's most likely class.

    Args:
        probs: each member's (N, C) out-of-fold probabilities.
        y: true class indices (N,).
        metric: what the blend maximises (``log_loss`` is minimised).
        rounds: picks to try; the best-scoring prefix is kept.

    Returns:
        (weights (M + 1,) summing to 1, the last for the uniform distribution (0 for ``macro_f1``), the picks of
        the kept prefix, the kept blend's score).
    """
    n_classes = probs[0].shape[1]
    candidates = [*probs, np.full_like(probs[0], 1.0 / n_classes)] if metric == "log_loss" else list(probs)
    total, picks = np.zeros_like(probs[0]), list[int]()
    best: tuple[float, int] = (-np.inf, 0)
    for r in range(rounds):
        score, j = max((_score((total + p) / (r + 1), y, metric), j) for j, p in enumerate(candidates))
        total, picks = total + candidates[j], [*picks, j]
        if score > best[0] + 1e-12:
            best = (score, len(picks))
    kept = picks[: best[1]]
    weights = np.bincount(kept, minlength=len(probs) + 1) / len(kept)
    return weights, kept, best[0]


def ensemble_weights(
    probs: Sequence[np.ndarray],
    y: np.ndarray,
    metric: BlendMetric = "log_loss",
    rounds: int = 25,
    bags: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Bagged ensemble selection (Caruana et al., 2006) over the members that carry signal.

    1. A member takes part only if its rows' log-likelihood beats the uniform distribution's by more than chance
       (a z-test, z >= 3): a member of random probabilities never does, and gets weight 0.
    2. :func:`greedy_selection` runs on ``bags`` bootstrap samples of the rows and the weights are averaged: a
       pick that only fits a few lucky rows is rare across samples (one selection on all rows overfits them).
    3. If the bagged blend scores below the best member on all rows, one selection on all rows is used instead,
       so the blend always scores at least as well as its best member on the fitted metric.

    Returns:
        Weights (M + 1,) summing to 1, the last for the uniform distribution.
    """
    live = _with_signal(probs, y) or [int(np.argmax([_score(p, y, metric) for p in probs]))]
    rng = np.random.default_rng(seed)
    bagged = np.zeros(len(live) + 1)
    for _ in range(bags):
        rows = rng.integers(0, len(y), len(y))
        bagged += greedy_selection([probs[j][rows] for j in live], y[rows], metric, rounds)[0] / bags
    full = greedy_selection([probs[j] for j in live], y, metric, rounds)[0]
    best_member = max(_score(probs[j], y, metric) for j in live)
    chosen = bagged if _score(_blend([probs[j] for j in live], bagged), y, metric) >= best_member else full
    weights = np.zeros(len(probs) + 1)
    weights[live], weights[-1] = chosen[:-1], chosen[-1]
    return weights


def peer_weights(probs: Sequence[np.ndarray], y: np.ndarray, z: float = 3.0) -> np.ndarray:
    """Equal weights over the best member (by mean log-likelihood) and every member the rows cannot tell from it:
    a member whose rows' log-likelihood is below the best's beyond chance (a paired z-test, z >= 3) gets 0, as does
    one without signal (see :func:`ensemble_weights`).

    Nothing is fitted but which members take part, so nothing can overfit a small catalogue's rows, where fitted
    weights move with a few rows (README "How the preset weighs its members").

    Returns:
        Weights (M + 1,) summing to 1, the last (for the uniform distribution) 0.
    """
    loglik = [_row_loglik(p, y) for p in probs]
    live = _with_signal(probs, y) or [int(np.argmax([ll.mean() for ll in loglik]))]
    best = max(live, key=lambda j: loglik[j].mean())
    peers = [j for j in live if j == best or not _significant(loglik[best] - loglik[j], z)]
    weights = np.zeros(len(probs) + 1)
    weights[peers] = 1.0 / len(peers)
    return weights


def held_peer_weights(
    probs: Sequence[np.ndarray], y: np.ndarray, metric: BlendMetric, rounds: int
) -> tuple[np.ndarray, str]:
    """:func:`peer_weights`, held to macro-F1 as :func:`guarded_weights` is: when the peers' blend classifies the
    out-of-fold rows worse than its best member (many rare classes, where the neural members are weak), the weights
    of :func:`guarded_weights` on ``metric`` instead, with a warning.

    Returns:
        The weights and what they were fitted on (``peers``, or the metric of the fallback).
    """
    weights = peer_weights(probs, y)
    short = _below_best_member(probs, y, weights, _with_signal(probs, y) or list(range(len(probs))))
    if short is None:
        return weights, "peers"
    log.warning(
        "the peers' equal blend's out-of-fold macro-F1 (%.4f) is below its best member's (%.4f): weights fitted by "
        "selection instead",
        *short,
    )
    return guarded_weights(probs, y, metric, rounds)


def _below_best_member(
    probs: Sequence[np.ndarray], y: np.ndarray, weights: np.ndarray, live: list[int]
) -> tuple[float, float] | None:
    """(the blend's macro-F1, the best of the ``live`` members') when the blend's is below it; else None."""
    best = max(_score(probs[j], y, "macro_f1") for j in live)
    got = _score(_blend(probs, weights), y, "macro_f1")
    return None if got >= best else (got, best)


def _with_signal(probs: Sequence[np.ndarray], y: np.ndarray) -> list[int]:
    """The members whose rows' log-likelihood beats the uniform distribution's by more than chance."""
    uniform = np.full(len(y), -np.log(probs[0].shape[1]))
    return [j for j, p in enumerate(probs) if _significant(_row_loglik(p, y) - uniform)]


def _blend(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return np.asarray(sum(w * p for w, p in zip(weights, probs))) + weights[-1] / probs[0].shape[1]


def _row_loglik(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, None))


def _significant(gain: np.ndarray, z: float = 3.0) -> bool:
    """The rows' gains are positive beyond chance (a z-test on their mean, z >= 3)."""
    spread = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    return bool(gain.mean() > 0 and (spread == 0 or gain.mean() / spread >= z))


def read_member(run: str | Path, name: str | None = None) -> Member:
    """A finished run's out-of-fold probabilities (every row a fold validated on, from its final stage).

    Raises:
        FileNotFoundError: not a finished run.
        ValueError: the run has out-of-fold predictions for only some rows (it trained only some folds).
    """
    rd = RunDir(run).require_finished()
    stage = read_json(rd.summary)["stage"]
    oof = read_numeric_table(rd.stage_oof(stage))
    folds = read_numeric_table(rd.folds)
    folds = folds[folds["fold"] != TRAIN_ONLY]  # rows only trained on (a fixed split's training table): no OOF
    if len(oof) != len(folds):
        raise ValueError(
            f"{rd.root}: out-of-fold predictions for {len(oof)} of {len(folds)} rows; an ensemble "
            f"is fitted on every row: train every fold of it"
        )
    classes = list(LabelMap.load(rd.label_map).classes)
    oof = oof.set_index("id").loc[folds["id"]]
    return Member(
        name or rd.root.name,
        rd,
        folds["id"].to_numpy(),
        folds["fold"].to_numpy(),
        oof[classes].to_numpy(dtype=np.float64),
    )


def _check_same_rows(members: list[Member], label_maps: list[LabelMap]) -> None:
    first = members[0]
    for m, lm in zip(members[1:], label_maps[1:]):
        if lm.classes != label_maps[0].classes:
            raise ValueError(f"{m.rd.root}: its classes differ from {first.rd.root}'s; ensemble runs of one table")
        if len(m.ids) != len(first.ids) or not (m.ids == first.ids).all():
            raise ValueError(
                f"{m.rd.root}: its training ids differ from {first.rd.root}'s; ensemble runs trained on the same table"
            )
        if not (m.folds == first.folds).all():
            bad = first.ids[np.flatnonzero(m.folds != first.folds)[0]]
            raise ValueError(
                f"{m.rd.root}: its folds differ from {first.rd.root}'s (e.g. id {bad!r}); an "
                f"ensemble needs the same folds (same data.folds, data.seed and fold column)"
            )


def fit_ensemble(
    runs: Sequence[str | Path],
    out: str | Path,
    metric: BlendMetric = "log_loss",
    rounds: int = 25,
    names: Sequence[str] | None = None,
    method: BlendMethod = "select",
) -> dict:
    """Fit weights on the runs' out-of-fold predictions and write the ensemble folder ``out``.

    ``method``: ``select`` (bagged ensemble selection on ``metric``, see :func:`guarded_weights`) or ``peers``
    (equal weights over the members the rows cannot tell from the best one, held to its macro-F1, see
    :func:`held_peer_weights`).

    Returns:
        The summary (also ``out/cv_summary.json``): the blend's out-of-fold metrics, each member's, the weights.

    Raises:
        ValueError: no runs, or runs whose classes, ids or folds differ.
    """
    if not runs:
        raise ValueError("an ensemble needs at least one run")
    members = [read_member(r, None if names is None else names[i]) for i, r in enumerate(runs)]
    label_maps = [LabelMap.load(m.rd.label_map) for m in members]
    _check_same_rows(members, label_maps)
    first, lm = members[0], label_maps[0]
    with hold_run_dir(RunDir(out)) as ens:  # one writer per ensemble folder
        oof = read_numeric_table(first.rd.stage_oof(read_json(first.rd.summary)["stage"]))
        y, _ = lm.encode(oof.set_index("id").loc[first.ids, "label"])
        for m in members:  # members trained with label smoothing (or none) are calibrated alike before blending
            m.scale = fit_logit_scale(np.log(np.clip(m.probs, 1e-15, None)), y, 0.05, 20.0)
        calibrated = [rescale_probs(m.probs, m.scale) for m in members]
        if method == "peers":
            weights, fitted_on = held_peer_weights(calibrated, y, metric, rounds)
        else:
            weights, fitted_on = guarded_weights(calibrated, y, metric, rounds)
        return _write(ens, members, weights, _blend(calibrated, weights), y, lm, (metric, fitted_on), method)


def guarded_weights(
    probs: Sequence[np.ndarray], y: np.ndarray, metric: BlendMetric, rounds: int
) -> tuple[np.ndarray, BlendMetric]:
    """Weights fitted on ``metric``; a log-loss blend whose out-of-fold macro-F1 is below its best member's (of
    those with signal, see :func:`ensemble_weights`) is fitted again on macro-F1 (which keeps it at least at that
    member's), so a blend never classifies worse than the best model in it. Many rare classes are where this
    happens: weights that minimise the log-loss give the neural members, weak on rare classes, too much say in
    the argmax.

    Returns:
        The weights and the metric they were fitted on.
    """
    weights = ensemble_weights(probs, y, metric, rounds)
    live = _with_signal(probs, y)
    if metric != "log_loss" or not live:  # members without signal never set the bar (a lucky one would win it)
        return weights, metric
    short = _below_best_member(probs, y, weights, live)
    if short is None:
        return weights, metric
    log.warning(
        "the log-loss blend's out-of-fold macro-F1 (%.4f) is below its best member's (%.4f): weights fitted on "
        "macro-F1 instead",
        *short,
    )
    return ensemble_weights(probs, y, "macro_f1", rounds), "macro_f1"


def _write(
    ens: RunDir,
    members: list[Member],
    weights: np.ndarray,
    blend: np.ndarray,
    y: np.ndarray,
    lm: LabelMap,
    metrics: tuple[BlendMetric, str],
    method: BlendMethod = "select",
) -> dict:
    """The ensemble folder: the first member's config, label map and folds, the blend's OOF, summary and spec."""
    ens.root.mkdir(parents=True, exist_ok=True)
    first = members[0]
    for src, dst in ((first.rd.config, ens.config), (first.rd.label_map, ens.label_map), (first.rd.folds, ens.folds)):
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    oof = pd.DataFrame(blend, columns=list(lm.classes))
    oof.insert(0, "id", first.ids)
    oof.insert(1, "fold", first.folds)
    oof.insert(2, "label", lm.decode(y))
    oof.insert(3, "pred", lm.decode(blend.argmax(1)))
    ens.stage(ENSEMBLE_STAGE).mkdir(exist_ok=True)
    write_table(oof, ens.stage_oof(ENSEMBLE_STAGE))
    spec = {
        "method": method,  # both asked for (a retrain asks again); fitted_on: what the weights were fitted on
        "metric": metrics[0],
        "fitted_on": metrics[1],
        "uniform_weight": float(weights[-1]),
        "members": [
            {
                "name": m.name,
                "run": _relative(m.rd.root, ens.root),
                "weight": float(w),
                "scale": m.scale,
                "oof": classification_metrics(y, m.probs),
            }
            for m, w in zip(members, weights)
        ],
        "blend": classification_metrics(y, blend),
    }
    write_json(ens.ensemble, spec)
    stage = _stage_summary(members, blend, y)
    summary = {
        **stage,
        "run_dir": str(ens.root),
        "model_type": "ensemble",
        "fusion": "",
        "stages": {ENSEMBLE_STAGE: stage},
        "ensemble": spec,
    }
    write_json(ens.summary, summary)
    return summary


def _stage_summary(members: list[Member], blend: np.ndarray, y: np.ndarray) -> dict:
    """The blend's per-fold metrics in the shape of a training stage's summary (its cost: the members')."""
    summaries = [read_json(m.rd.summary) for m in members]
    folds = members[0].folds
    per_fold = {
        str(k): {**classification_metrics(y[folds == k], blend[folds == k]), "best_epoch": 0, "seconds": 0.0}
        for k in sorted(set(folds.tolist()))
    }
    keys = [k for k in next(iter(per_fold.values())) if k not in ("best_epoch", "seconds")]
    return {
        "stage": ENSEMBLE_STAGE,
        "folds": per_fold,
        "mean": {k: statistics.fmean(f[k] for f in per_fold.values()) for k in keys},
        "std": {k: statistics.pstdev([f[k] for f in per_fold.values()]) for k in keys},
        "train_seconds": round(sum(s["train_seconds"] for s in summaries), 2),
        "params": {"total": sum(s["params"]["total"] for s in summaries), "trainable": 0},
    }


def _relative(path: Path, root: Path) -> str:
    """A member's path as the ensemble file keeps it: relative when it lies inside the ensemble folder."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())
