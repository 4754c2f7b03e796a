"""What goes wrong around a run, and how it ends: one writer per run folder, options that would be ignored, hostile
YAML, read-only folders, unknown model names and messages with [brackets] in them. Each ends in ``error: ...`` and
exit code 2, never a traceback or a silently wrong run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

import aisle.training  # noqa: F401  (torch and Lightning loaded now, not while a test races another process)
from aisle.cli import main
from aisle.config import ConfigError, load_config
from aisle.data.demo import write_demo_catalogue
from aisle.data.labels import apply_rare_class_policy
from aisle.locking import FolderLocked, hold_run_dir
from aisle.rundir import RunDir
from aisle.training.cv import prepare_run_dir


def _flat(text: str) -> str:
    """Console output without rich's line wrapping and boxes."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat")
    write_demo_catalogue(out, n_train=60, n_test=12, seed=1, image_size=32)
    return out


def _config(tmp_path: Path, catalogue: Path, model: dict | None = None, **runtime) -> Path:
    cfg = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "data": {"train_csv": str(catalogue / "train.csv"), "folds": 2},
        "model": model or {"type": "linear"},
        "train": {"epochs": 1, "batch_size": 16},
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache"), **runtime},
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


IMAGE_MODEL = {"type": "image", "image": {"name": "timm:test_resnet", "pretrained": False}, "image_size": 32}


# ---------------------------------------------------------------- one writer per run folder

HOLDER = """
import sys
from aisle.locking import hold_run_dir
from aisle.rundir import RunDir
with hold_run_dir(RunDir(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def held(tmp_path) -> Iterator[tuple[Path, int]]:
    """A run folder (holding ``keep.txt``) whose lock another live process holds: (folder, its pid)."""
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "keep.txt").write_text("the other writer's file")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(rd)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        yield rd, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_held_run_folder_is_refused_at_once_naming_the_holder(held) -> None:
    rd, pid = held
    with pytest.raises(FolderLocked, match=f"pid {pid} on {socket.gethostname()}"), hold_run_dir(RunDir(rd)):
        pass
    assert (rd / "keep.txt").exists() and json.loads(RunDir(rd).lock.read_text())["pid"] == pid


def test_overwrite_of_a_held_run_folder_deletes_nothing(held, tmp_path, catalogue, capsys) -> None:
    rd, pid = held
    cfg = _config(tmp_path, catalogue)
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd), "--overwrite"]) == 2
    err = _flat(capsys.readouterr().err)
    assert f"pid {pid}" in err and "wait for it to finish" in err and "Traceback" not in err
    assert (rd / "keep.txt").read_text() == "the other writer's file"
    assert not RunDir(rd).config.exists()


@pytest.mark.slow  # ~25 s on 2 cores; the fast tests above hold the lock from a small process instead
def test_two_trainers_on_one_run_folder_one_proceeds(tmp_path, catalogue, capsys) -> None:
    """Two real ``aisle train --overwrite`` on one folder: the first trains, the second exits 2 naming it."""
    cfg = _config(tmp_path, catalogue, model=IMAGE_MODEL, feature_cache=False)
    rd = RunDir(tmp_path / "run")
    first = subprocess.Popen(
        [sys.executable, "-m", "aisle", "-q", "train", "-c", str(cfg), "--run-dir", str(rd.root), "--overwrite"],
        env={**os.environ, "AISLE_PROGRESS": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if rd.lock.exists() and rd.lock.read_text().startswith("{"):
                break
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)  # frozen while it holds the lock: the race is decided, not timed
        assert first.poll() is None, "the first trainer ended before it could be caught holding its lock"
        assert json.loads(rd.lock.read_text())["pid"] == first.pid
        before = sorted(rd.root.rglob("*"))
        assert main(["train", "-c", str(cfg), "--run-dir", str(rd.root), "--overwrite"]) == 2
        assert f"pid {first.pid}" in _flat(capsys.readouterr().err)
        assert sorted(rd.root.rglob("*")) == before, "the refused trainer touched nothing"
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-2000:]
    assert not rd.lock.exists(), "the lock goes with its writer"
    hist = pd.read_csv(rd.fold("main", 0).history)
    assert hist["epoch"].tolist() == [1], "one writer: each epoch's history row once"
    assert json.loads(rd.summary.read_text())["folds"].keys() == {"0", "1"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("content", ["holder", "", "not json"])
def test_a_stale_lock_is_taken_over(tmp_path, catalogue, capsys, content) -> None:
    """A lock file left by a process that died (or one cut off while being written) does not block the folder."""
    rd = RunDir(tmp_path / "run")
    rd.root.mkdir()
    pid = _dead_pid()
    holder = {"pid": pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00+00:00"}
    rd.lock.write_text(json.dumps(holder) if content == "holder" else content)
    assert main(["train", "-c", str(_config(tmp_path, catalogue)), "--run-dir", str(rd.root)]) == 0
    err = _flat(capsys.readouterr().err)
    assert (f"stale lock of pid {pid}" in err) == (content == "holder")
    assert rd.is_finished() and not rd.lock.exists()


def test_the_lock_is_released_on_errors_and_reentrant(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    with pytest.raises(RuntimeError, match="boom"), hold_run_dir(rd):
        with hold_run_dir(rd):  # a portfolio holds its folder while it fits the ensemble into it
            assert json.loads(rd.lock.read_text())["pid"] == os.getpid()
        assert rd.lock.exists(), "the inner block does not release the outer one's lock"
        raise RuntimeError("boom")
    assert not rd.lock.exists()
    with hold_run_dir(rd):
        pass


def test_overwrite_clears_the_folder_but_keeps_its_lock(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    (rd.root / "main" / "fold_0").mkdir(parents=True)
    (rd.root / "main" / "fold_0" / "history.csv").write_text("epoch\n1\n")
    with hold_run_dir(rd):
        prepare_run_dir(load_config(), rd, overwrite=True)
        assert rd.lock.exists() and rd.contents() == [rd.config]


# ---------------------------------------------------------------- options that would be ignored


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (["--set", "train.epochs=8"], "--set"),
        (["-c", "other.yaml"], "--config"),
        (["--run-dir", "elsewhere"], "--run-dir"),
        (["--overwrite"], "--overwrite"),
    ],
)
def test_resume_refuses_options_it_would_ignore(tmp_path, capsys, extra, name) -> None:
    assert main(["train", "--resume", str(tmp_path / "run"), *extra]) == 2
    err = _flat(capsys.readouterr().err)
    assert f"{name} would be ignored" in err and "start a new run" in err
    assert not (tmp_path / "run").exists()


def test_models_dir_without_preset_is_refused(tmp_path, capsys) -> None:
    assert main(["train", "--models-dir", str(tmp_path)]) == 2
    assert "--models-dir only applies with --preset" in _flat(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["predict", "RUN", "--scale", "0"], "--scale"),
        (["predict", "RUN", "--scale", "224", "--scale", "-1"], "--scale"),
        (["predict", "RUN", "--batch-size", "0"], "--batch-size"),
        (["predict", "RUN", "--batch-size", "-8"], "--batch-size"),
        (["check", "--rows", "0"], "--rows"),
        (["check", "--workers", "0"], "--workers"),
        (["report", "RUN", "--errors", "-1"], "--errors"),
        (["demo-data", "OUT", "--image-size", "0"], "--image-size"),
    ],
)
def test_numbers_out_of_range_are_refused(tmp_path, capsys, args, option) -> None:
    args = [str(tmp_path / a) if a in ("RUN", "OUT") else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"'{option}'" in err and "greater than or equal to" in _flat(err)


# ---------------------------------------------------------------- hostile and broken YAML


def _alias_bomb(levels: int, width: int) -> str:
    """The "billion laughs": each level lists ``width`` aliases of the one before (width**levels values)."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join([*lines, f"data: {{text_cols: *a{levels - 1}}}"]) + "\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(_alias_bomb(9, 10).encode(), "too many YAML aliases", id="billion-laughs"),
        pytest.param(_alias_bomb(11, 9).encode(), "too many YAML aliases", id="under-100-aliases"),
        pytest.param(
            ("data: {text_cols: &t [title]}\n" + "x: *t\n" * 101).encode(), "too many YAML aliases", id="101-aliases"
        ),
        pytest.param(b"data: " + b"[" * 50_000 + b"]" * 50_000, "nests deeper than", id="deep"),
        pytest.param(b"name: x\n" + b"# padding\n" * 120_000, "a config is at most", id="over-1-MiB"),
        pytest.param("name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text", id="latin-1"),
    ],
)
def test_hostile_or_broken_yaml_is_refused_quickly_naming_the_file(tmp_path, content, expected) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert time.perf_counter() - start < 5


def test_an_alias_bomb_in_an_override_is_refused() -> None:
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x, x]", *(["*a"] * 101)]) + "]"
    with pytest.raises(ConfigError, match="override 'data.text_cols=.*too many YAML aliases"):
        load_config(None, [f"data.text_cols={bomb}"])


def test_a_few_aliases_still_load(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {text_cols: &t [title, description], attribute_cols: *t}\n")
    cfg = load_config(path)
    assert cfg.data.attribute_cols == ["title", "description"]


# ---------------------------------------------------------------- folders that cannot be written


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder this process cannot write in (root writes through permission bits: then sysfs, if it refuses)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    try:
        tempfile.TemporaryFile(dir="/sys").close()
    except OSError:
        yield Path("/sys")
        return
    pytest.skip("no folder here that root cannot write")


def test_read_only_folders_fail_up_front_naming_them(tmp_path, catalogue, read_only_dir, capsys) -> None:
    cfg = _config(tmp_path, catalogue)
    target = read_only_dir / "aisle-out"
    commands = {
        "run folder": ["train", "-c", str(cfg), "--run-dir", str(target)],
        "output folder": ["predict", str(tmp_path / "no-run"), "--out", str(target)],
        "output folder (--out)": ["ensemble", str(tmp_path / "p.csv"), "--out", str(target)],
    }
    for what, args in commands.items():
        assert main(args) == 2, args
        err = _flat(capsys.readouterr().err)
        assert f"cannot write the {what}" in err and str(target) in err and "Traceback" not in err, err
    assert not target.exists()


def test_a_read_only_feature_cache_is_named(tmp_path, catalogue, read_only_dir, capsys) -> None:
    frozen = {**IMAGE_MODEL, "image": {**IMAGE_MODEL["image"], "trainable": False}}
    cfg = _config(tmp_path, catalogue, model=frozen, cache_dir=str(read_only_dir / "aisle-cache"))
    assert main(["train", "-c", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    err = _flat(capsys.readouterr().err)
    assert "cannot write the feature cache (runtime.cache_dir)" in err and "aisle-cache" in err


# ---------------------------------------------------------------- model names nobody has


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.image.name=timm:not_a_model", ["timm has no model 'not_a_model'", "timm:local-dir:/path"]),
        ("model.image.name=timm:resnet_18", ["closest: timm:resnet18"]),
        ("model.image.name=timm:resnet18.no_such_tag", ["no pretrained tag 'no_such_tag'", "a1_in1k"]),
        ("model.image.name=timm:local-dir:/no/such/folder", ["not a folder with a timm config.json"]),
    ],
)
def test_an_unknown_timm_model_fails_before_the_run_folder(tmp_path, catalogue, capsys, override, expected) -> None:
    rd = tmp_path / "run"
    cfg = _config(tmp_path, catalogue, model=IMAGE_MODEL)
    assert main(["train", "-c", str(cfg), "--set", override, "--run-dir", str(rd)]) == 2
    err = _flat(capsys.readouterr().err)
    assert "model.image.name" in err and all(e in err for e in expected), err
    assert not rd.exists(), "nothing is written for a model that cannot be built"


@pytest.mark.parametrize(
    ("name", "offline", "expected"),
    [
        ("hf:/no/such/folder", False, "no such folder"),
        ("hf:./no-such-folder", False, "no such folder"),
        ("hf:not a hub id!", False, "neither a folder nor a Hugging Face hub id"),
        ("hf:someone/not-in-the-cache", True, "not in the Hugging Face cache"),
    ],
)
def test_an_unreachable_hf_model_fails_before_the_run_folder(
    tmp_path, catalogue, capsys, monkeypatch, name, offline, expected
) -> None:
    import aisle.models.text_towers as text_towers

    monkeypatch.setattr(text_towers, "is_offline_mode", lambda: offline)
    rd = tmp_path / "run"
    cfg = _config(tmp_path, catalogue, model={"type": "text", "text": {"name": name}})
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd)]) == 2
    err = _flat(capsys.readouterr().err)
    assert "model.text.name" in err and expected in err and "hf:/path/to/folder" in err, err
    assert not rd.exists()


@pytest.fixture
def no_hub(monkeypatch) -> list[str]:
    """The hub cannot be reached (the probe is counted); the process-wide offline switch is restored afterwards."""
    from huggingface_hub import constants

    import aisle.models.hub as hub

    probes: list[str] = []
    monkeypatch.setattr(hub, "_probe", lambda endpoint, timeout: probes.append(endpoint) or False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(tempfile.mkdtemp()) / "hub"))
    hub.hub_reachable.cache_clear()
    yield probes
    hub.hub_reachable.cache_clear()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"type": "image", "image": {"name": "timm:resnet18", "pretrained": True}, "image_size": 32},
            ["model.image.name", "timm/resnet18.a1_in1k", "timm:local-dir:/path/to/folder"],
        ),
        (
            {"type": "dual", "dual": {"name": "open_clip:ViT-B-32/laion2b_s34b_b79k", "pretrained": True}},
            ["model.dual.name", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"],
        ),
        (
            {"type": "dual", "dual": {"name": "hf-blip:Salesforce/blip-image-captioning-base"}},
            ["model.dual.name", "Salesforce/blip-image-captioning-base", "hf-blip:/path/to/folder"],
        ),
    ],
)
def test_a_hub_tower_fails_fast_offline_before_the_run_folder(
    tmp_path, catalogue, capsys, no_hub, model, expected
) -> None:
    rd = tmp_path / "run"
    cfg = _config(tmp_path, catalogue, model=model)
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd)]) == 2
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd)]) == 2
    err = _flat(capsys.readouterr().err)
    assert all(e in err for e in expected) and "cannot reach" in err, err
    assert not rd.exists(), "nothing is written for a model that cannot be downloaded"
    assert len(no_hub) == 1, "the hub is probed once per process"
    from huggingface_hub import is_offline_mode

    assert is_offline_mode(), "once the hub is known to be unreachable, Hugging Face libraries stop retrying"


def test_cached_hub_weights_need_no_network(no_hub) -> None:
    from huggingface_hub import constants

    from aisle.models.hub import hub_source, require_hub_weights

    source = hub_source("timm", "resnet18", pretrained=True)
    with pytest.raises(ValueError, match="not in the local cache"):
        require_hub_weights("model.image.name", "timm:resnet18", source)
    snapshot = Path(constants.HF_HUB_CACHE) / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    require_hub_weights("model.image.name", "timm:resnet18", source)  # cached: no error


@pytest.mark.parametrize(
    ("prefix", "model", "pretrained", "repo"),
    [
        ("timm", "resnet18", True, "timm/resnet18.a1_in1k"),
        ("timm", "resnet18", False, None),
        ("timm", "local-dir:/some/folder", True, None),
        ("timm", "hf-hub:someone/weights", True, "someone/weights"),
        ("hf", "sentence-transformers/all-MiniLM-L6-v2", False, "sentence-transformers/all-MiniLM-L6-v2"),
        ("hf-siglip", "tiny", True, None),
        ("hf-blip", "tiny", True, None),
        ("hf-blip", "Salesforce/blip-image-captioning-base", True, "Salesforce/blip-image-captioning-base"),
        ("open_clip", "tiny", True, None),
        ("open_clip", "ViT-B-32/laion2b_s34b_b79k", False, None),
        ("ngram", "word1-2", True, None),
    ],
)
def test_which_towers_need_the_hub(tmp_path, prefix, model, pretrained, repo) -> None:
    from aisle.models.hub import hub_source

    source = hub_source(prefix, model, pretrained)
    assert (source.repo if source is not None else None) == repo
    assert hub_source("hf", str(tmp_path), True) is None, "a folder needs no network"


def test_the_hub_probe_answers_quickly() -> None:
    from aisle.models.hub import _probe

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _probe(f"http://127.0.0.1:{port}", 1.0)
    t0 = time.perf_counter()
    assert not _probe(f"http://127.0.0.1:{port}", 1.0), "a closed port is not the hub"
    assert time.perf_counter() - t0 < 1.5


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ModuleNotFoundError("No module named 'sentencepiece'", name="sentencepiece"), "pip install sentencepiece"),
        (ImportError("SiglipTokenizer requires the SentencePiece library but it was not found"), "SentencePiece"),
    ],
)
def test_a_missing_package_is_an_error_naming_it(tmp_path, catalogue, capsys, monkeypatch, error, expected) -> None:
    import aisle.training.cv as cv

    def missing(*args, **kwargs):
        raise error

    monkeypatch.setattr(cv, "create_classifier", missing)
    cfg = _config(tmp_path, catalogue, model=IMAGE_MODEL)
    assert main(["train", "-c", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    err = _flat(capsys.readouterr().err)
    assert "error: a package this needs is missing" in err and expected in err, err
    assert "Traceback" not in err


def test_the_tokenizer_packages_are_installed() -> None:
    import google.protobuf
    import sentencepiece

    assert sentencepiece.SentencePieceProcessor and google.protobuf.__version__


# ---------------------------------------------------------------- messages


def test_brackets_in_error_messages_are_printed_as_they_are(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a short path: rich folds long words
    assert main(["train", "-c", "[bold]x[/]/['a', 'b'].yaml"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "[bold]x[/]" in err and "['a', 'b'].yaml" in err


@pytest.mark.parametrize(
    ("counts", "policy", "offered", "not_offered"),
    [
        # merging the one rare row still leaves a class of one: merge is not offered again, nor are fewer folds
        ({"a": 6, "b": 6, "r": 1}, "merge", ["rare_classes=drop", "'__other__' (1)"], ["rare_classes=merge", "folds="]),
        ({"a": 6, "b": 6, "r": 2}, "merge", ["data.folds=2", "rare_classes=drop"], ["rare_classes=merge"]),
        ({"a": 6, "b": 6, "r": 1}, "error", ["rare_classes=drop"], ["rare_classes=merge"]),
        ({"a": 6, "b": 6, "r": 1, "s": 1, "t": 1}, "error", ["rare_classes=merge", "rare_classes=drop"], []),
        ({"a": 6, "b": 6, "r": 2}, "error", ["data.folds=2"], ["rare_classes=merge"]),
    ],
)
def test_rare_class_messages_offer_only_what_works(counts, policy, offered, not_offered) -> None:
    labels = pd.Series([c for c, n in counts.items() for _ in range(n)], dtype=object)
    with pytest.raises(ValueError) as info:
        apply_rare_class_policy(labels, 3, policy)
    msg = str(info.value)
    assert all(o in msg for o in offered) and not any(n in msg for n in not_offered), msg


def test_an_untagged_open_clip_name_fails_before_the_run_folder(tmp_path, catalogue, capsys) -> None:
    """``open_clip:RN50`` names no weights: pretrained it would be random weights, so training stops first."""
    rd = tmp_path / "run"
    cfg = _config(tmp_path, catalogue, model={"type": "dual", "dual": {"name": "open_clip:RN50"}})
    assert main(["train", "-c", str(cfg), "--run-dir", str(rd)]) == 2
    err = _flat(capsys.readouterr().err)
    assert "model.dual.name" in err and "open_clip:RN50/<tag>" in err, err
    assert not rd.exists(), "nothing is written for a model that would start from random weights"
