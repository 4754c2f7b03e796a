"""Train a finished run again, into a new folder, with a few config keys changed (pseudo-label rounds): a run
with its own config, an ensemble member by member and then its weights refitted on the new members."""

from __future__ import annotations

import logging
from pathlib import Path

from aisle.config import load_config
from aisle.locking import hold_run_dir
from aisle.rundir import RunDir
from aisle.serialization import read_json
from aisle.training.blend import fit_ensemble
from aisle.training.cv import run_cv

__all__ = ["retrain"]

log = logging.getLogger(__name__)


def _member_dir(ens: RunDir, run: str) -> Path:
    p = Path(run)
    return p if p.is_absolute() else ens.root / p


def retrain(run_dir: str | Path, new_dir: str | Path, changes: list[str]) -> dict:
    """Train ``run_dir``'s model again into ``new_dir`` with ``changes`` (``key=value``) over its config.

    A finished ``new_dir`` is kept as it is and a cut-off one resumed, so a loop of rounds can be run again.

    Returns:
        The new run's (or ensemble's) summary.

    Raises:
        FileNotFoundError: ``run_dir`` is not a finished run.
        FileExistsError: ``new_dir`` holds something that is not a run.
    """
    rd, new = RunDir(run_dir).require_finished(), RunDir(new_dir)
    if new.is_finished():
        log.info("%s is finished already: kept", new.root)
        return read_json(new.summary)
    if not rd.is_ensemble():
        cfg = load_config(rd.config, changes)
        return run_cv(cfg, new.root, resume=new.is_run())
    spec = read_json(rd.ensemble)
    with hold_run_dir(new):
        runs = []
        for m in spec["members"]:
            target = new.members / m["name"]
            log.info("retraining ensemble member %s into %s", m["name"], target)
            retrain(_member_dir(rd, m["run"]), target, changes)
            runs.append(target)
        names = [m["name"] for m in spec["members"]]
        return fit_ensemble(runs, new.root, metric=spec["metric"], names=names, method=spec.get("method", "select"))
