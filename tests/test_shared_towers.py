"""The real pretrained towers in ../shared/models load through the same path a hub name takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aisle.config import ModelConfig
from aisle.models import create_classifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
LITE0, MINILM = SHARED / "tf_efficientnet_lite0", SHARED / "all-MiniLM-L6-v2"
pytestmark = pytest.mark.skipif(
    not (LITE0.is_dir() and MINILM.is_dir()), reason=f"shared pretrained towers not found under {SHARED}"
)


def test_local_dir_towers_load_with_their_own_preprocessing():
    mcfg = ModelConfig(
        type="fusion",
        image={"name": f"timm:local-dir:{LITE0}"},
        text={"name": f"hf:{MINILM}", "pooler": "mean", "max_length": 32},
        head_hidden=0,
    )
    model = create_classifier(mcfg, num_classes=3).eval()
    pre = model.image_encoder.preprocess
    assert (pre.size, pre.mean, pre.std, pre.interpolation) == (224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert model.image_encoder.output_dim == 1280 and model.text_encoder.output_dim == 384
    tok = model.text_encoder.tokenize(["Nike Men Blue T-shirt", "Puma Women Black Sports Shoes"])
    with torch.no_grad():
        a = model.text_encoder(tok)
    # pretrained weights, not a random init: related product titles embed close together
    with torch.no_grad():
        b = model.text_encoder(model.text_encoder.tokenize(["Adidas Men Navy Tshirt", "Lavie Women Brown Handbag"]))
    sim = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    assert sim[0, 0] > sim[0, 1], sim
