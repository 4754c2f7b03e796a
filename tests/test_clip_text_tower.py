"""A CLIP checkpoint as an ``hf:`` text tower: its text side (``CLIPTextModelWithProjection``), chosen by the
checkpoint config's ``model_type`` (never the name), pooled at EOS and projected as CLIP's text features are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPModel, CLIPTextModelWithProjection

from aisle.models.text_towers import HFTextTower, tiny_bert_tower
from conftest import save_tiny_clip

TEXTS = ["a red wool box with a long name", "silk", "a silk tent"]


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    return save_tiny_clip(tmp_path / "some-checkpoint", TEXTS)  # the folder's name says nothing of CLIP


def _clip_text_features(folder: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = CLIPModel.from_pretrained(folder).eval().get_text_features(**batch)
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5: an output object


def test_a_clip_checkpoint_reads_as_its_text_side_with_clip_text_features(clip_dir: Path) -> None:
    tower = HFTextTower(str(clip_dir), pooler="eos", max_length=16).eval()
    assert isinstance(tower.model, CLIPTextModelWithProjection)
    assert tower.output_dim == 24  # the joint space (projection_dim), not the 32-wide hidden states
    batch = tower.tokenize(TEXTS)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # rows of different lengths: padding in play
    with torch.no_grad():
        torch.testing.assert_close(tower(batch), _clip_text_features(clip_dir, batch))


def test_a_clip_text_tower_is_rebuilt_from_its_assets(clip_dir: Path, tmp_path: Path) -> None:
    tower = HFTextTower(str(clip_dir), pooler="eos", max_length=16).eval()
    settings = tower.save_assets(tmp_path / "assets")
    again = HFTextTower(str(clip_dir), assets_dir=tmp_path / "assets", **settings).eval()
    again.load_state_dict(tower.state_dict())
    batch = tower.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(again(batch), tower(batch))
    assert isinstance(again.model, CLIPTextModelWithProjection) and again.output_dim == 24


def test_a_random_clip_text_tower_and_its_gradients(clip_dir: Path) -> None:
    tower = HFTextTower(str(clip_dir), pretrained=False, pooler="eos", max_length=16)
    tower(tower.tokenize(TEXTS)).sum().backward()
    assert len(tower.blocks()) == 2  # train_last_n_blocks reaches CLIP's layers
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)


def test_the_eos_pooler_reads_each_rows_last_real_token() -> None:
    tower = tiny_bert_tower(pooler="eos", texts=TEXTS).eval()
    tower.tokenizer.padding_side = "left"
    tower = HFTextTower("tiny:bert", pooler="eos", config=tower.model.config, tokenizer=tower.tokenizer).eval()
    batch = tower.tokenize(TEXTS)
    with torch.no_grad():
        hidden = tower.model(**batch).last_hidden_state
    last = batch["attention_mask"].sum(1) - 1  # right padding, whatever the tokenizer had
    assert (batch["input_ids"][torch.arange(3), last] == tower.tokenizer.sep_token_id).all()
    with torch.no_grad():
        torch.testing.assert_close(tower(batch), hidden[torch.arange(3), last])
