"""runtime.accelerator picks the device of every forward pass a run makes, not only Lightning's training."""

from __future__ import annotations

import pytest
import torch

from aisle.cache.encode import EncodeOptions
from aisle.config import load_config
from aisle.devices import run_device
from aisle.training.fold import resolve_precision

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a CUDA device")


@no_cuda
def test_without_cuda_auto_and_cpu_run_on_the_cpu_and_gpu_is_an_error_naming_the_key():
    assert run_device("auto") == "cpu"
    assert run_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="runtime.accelerator is gpu .*auto or cpu"):
        run_device("gpu")


def test_with_cuda_auto_and_gpu_take_it_and_cpu_keeps_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_device("auto") == "cuda"
    assert run_device("gpu") == "cuda"
    assert run_device("cpu") == "cpu"
    assert resolve_precision("auto", "cpu") == "32-true"  # no mixed precision on a CPU the user chose


def test_frozen_tower_encoding_runs_where_the_runtime_says(monkeypatch):
    cfg = load_config(None, ["runtime.accelerator=cpu"])
    assert EncodeOptions.create(cfg.data, cfg.runtime).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EncodeOptions.create(cfg.data, cfg.runtime).device == "cpu"
    auto = load_config(None, ["runtime.accelerator=auto"])
    assert EncodeOptions.create(auto.data, auto.runtime).device == "cuda"
