"""The concat fusion weighs its towers alike whatever their widths, and reads weights saved before it did."""

from __future__ import annotations

import torch

from aisle.models.fusion import FUSIONS
from aisle.serialization import load_weights, save_weights


def _concat(dims=(1280, 384), classes=5):
    torch.manual_seed(0)
    return FUSIONS.create("concat", list(dims), classes, 64, 32, 0.0).eval()


def test_each_tower_brings_the_same_squared_norm_into_the_head():
    fusion = _concat()
    seen = {}
    fusion.head.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    feats = [torch.randn(8, 1280) * 50 + 3, torch.randn(8, 384) * 0.5]  # wildly different raw scales
    fusion(feats)
    image, text = seen["x"][:, :1280], seen["x"][:, 1280:]
    torch.testing.assert_close(image.pow(2).sum(1), text.pow(2).sum(1), rtol=1e-3, atol=0.0)
    torch.testing.assert_close(text.pow(2).sum(1), torch.full((8,), (1280 + 384) / 2), rtol=1e-3, atol=0.0)


def test_one_tower_is_not_rescaled():
    assert _concat(dims=(384,)).tower_scale.tolist() == [1.0]


def test_weights_saved_before_the_scaling_load_unscaled_and_predict_as_they_were_trained(tmp_path):
    old = _concat()
    feats = [torch.randn(4, 1280), torch.randn(4, 384)]
    unscaled = old.head(torch.cat([n(f) for n, f in zip(old.norms, feats)], dim=-1))
    state = {k: v for k, v in old.state_dict().items() if k != "tower_scale"}  # as written by the earlier code
    new = _concat()
    torch.nn.init.normal_(new.head[-1].weight)  # differs from `old` until the weights are loaded
    new.load_state_dict(state)
    assert new.tower_scale.tolist() == [1.0, 1.0]
    torch.testing.assert_close(new(feats)[0], unscaled)
    # weights saved now keep their scaling through a save / load
    save_weights(old, tmp_path / "w.safetensors")
    again = load_weights(_concat(), tmp_path / "w.safetensors")
    torch.testing.assert_close(again.tower_scale, old.tower_scale)
    torch.testing.assert_close(again(feats)[0], old(feats)[0])
