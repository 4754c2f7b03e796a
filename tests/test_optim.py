"""Learning rates per module group and the default class weights."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from aisle.config import LearningRates, validate_config
from aisle.training import class_weights, param_groups


class _TwoTowers(nn.Module):
    def __init__(self, text_trains: bool) -> None:
        super().__init__()
        self.text_encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        self.text_encoder.requires_grad_(text_trains)


def _rates(model: nn.Module, **lrs) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in param_groups(model, LearningRates(**lrs), 0.01)}


def test_an_unset_head_rate_is_scaled_while_a_tower_trains():
    rates = _rates(_TwoTowers(text_trains=True), default=2e-4)
    assert rates["head"] == pytest.approx(2e-3) and rates["head_no_decay"] == pytest.approx(2e-3)
    assert rates["text_encoder"] == pytest.approx(2e-4)
    assert _rates(_TwoTowers(text_trains=True), default=2e-4, head_scale=3.0)["head"] == pytest.approx(6e-4)


def test_a_head_on_frozen_towers_or_set_by_the_user_keeps_its_rate():
    assert _rates(_TwoTowers(text_trains=False), default=1e-3) == {
        "head": pytest.approx(1e-3),
        "head_no_decay": pytest.approx(1e-3),
    }
    assert _rates(_TwoTowers(text_trains=True), default=2e-4, head=5e-4)["head"] == pytest.approx(5e-4)


def test_models_trained_by_gradient_weigh_rare_classes_up_by_default():
    default = validate_config({"data": {"train_csv": "t.csv"}}).train.class_weights
    assert default == "auto"
    y = np.array([0] * 16 + [1] * 4 + [2])
    w = class_weights(y, 3, default)
    assert w is not None
    np.testing.assert_allclose(w, class_weights(y, 3, "inverse_sqrt"))
    assert w[2] > w[1] > w[0]
