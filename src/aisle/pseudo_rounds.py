"""Pseudo-label rounds: train -> pseudo-label the unlabelled table -> train again with those rows, R times.

Every round trains from the original run's config (``data.pseudo_labels`` set to the latest table), into a
folder beside it: ``<run>-pl1``, ``<run>-pl2``, ...; round r's table is written by round r-1's model, into that
model's own folder (``pseudo_labels/pseudo_labels.csv``). The pseudo rows only ever train: each round's
cross-validation scores are on the real rows alone, so they compare with the original run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aisle.inference.pseudo_label import PseudoLabels, pseudo_label
from aisle.rundir import RunDir
from aisle.training.retrain import retrain

__all__ = ["PseudoRound", "pseudo_rounds", "round_dir"]

log = logging.getLogger(__name__)


@dataclass
class PseudoRound:
    round: int
    table: PseudoLabels
    run_dir: Path
    summary: dict


def round_dir(run_dir: str | Path, r: int) -> Path:
    """Round ``r``'s run folder, beside the original run."""
    root = RunDir(run_dir).root
    return root.with_name(f"{root.name}-pl{r}")


def pseudo_rounds(
    run_dir: str | Path,
    data: str | Path,
    rounds: int,
    threshold: float = 0.95,
    max_per_class: int | None = None,
    soft: bool = False,
    pseudo_weight: float | None = None,
) -> list[PseudoRound]:
    """Run ``rounds`` rounds from the finished run ``run_dir``; return each round's table, folder and summary."""
    if rounds < 1:
        raise ValueError(f"rounds {rounds}: at least one round (train -> pseudo-label -> train again)")
    done, current = [], RunDir(run_dir).require_finished().root
    for r in range(1, rounds + 1):
        table = pseudo_label(current, data, threshold, max_per_class, soft)
        changes = [f"data.pseudo_labels={table.path.resolve()}"]
        if pseudo_weight is not None:
            changes.append(f"train.pseudo_weight={pseudo_weight}")
        target = round_dir(run_dir, r)
        log.info("pseudo-label round %d/%d: %d row(s) -> training %s", r, rounds, table.rows, target)
        done.append(PseudoRound(r, table, target, retrain(run_dir, target, changes)))
        current = target
    return done
