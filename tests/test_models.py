"""Contract tests over every registry entry, with tiny random models built offline."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from aisle.config import MODEL_TOWERS, ModelConfig
from aisle.models import (
    DUAL_ENCODERS,
    FUSIONS,
    IMAGE_TOWERS,
    TEXT_TOWERS,
    ProductClassifier,
    Registry,
    create_classifier,
    parse_tower_name,
    set_trainable,
)
from aisle.models.text_towers import HFTextTower
from aisle.models.tokenizer import train_word_tokenizer

TEXTS = ["soft wool knit cushion", "silk satin sheen", "merino woollen blend", "", "satin silken weave"]
B = 3


def _batch(image_size: int, k: int = 1, tokenize=None) -> dict:
    batch = {
        "image": torch.randn(B, k, 3, image_size, image_size),
        "image_mask": torch.ones(B, k, dtype=torch.bool),
        "label": torch.tensor([0, 1, 2]),
    }
    batch["image_mask"][0, 1:] = False
    if tokenize is not None:
        batch.update(tokenize(TEXTS[:B]))
    return batch


# Every registry entry gets a tiny offline instance here; a new entry without one fails test_all_entries_covered.
IMAGE_CASES = {"timm": [("test_resnet", 32), ("test_vit", None)]}
TEXT_CASES = {"hf": "config", "ngram": "word1-2,char2-4", "tiny": "bert", "tfidf": "word1-2,char2-4"}
DUAL_CASES = {"hf-blip": "tiny", "hf-clip": "tiny", "hf-siglip": "tiny", "open_clip": "tiny"}


def test_all_entries_covered():
    assert set(IMAGE_CASES) == set(IMAGE_TOWERS.list())
    assert set(TEXT_CASES) == set(TEXT_TOWERS.list())
    assert set(DUAL_CASES) == set(DUAL_ENCODERS.list())


def _text_tower(prefix: str):
    if prefix == "hf":
        tok = train_word_tokenizer(TEXTS, vocab_size=99)
        cfg = BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
        return HFTextTower("hf-test", config=cfg, tokenizer=tok, max_length=16)
    return TEXT_TOWERS.create(prefix, TEXT_CASES[prefix], texts=TEXTS)


def _check_tower(tower, batch):
    out = tower(batch)
    assert out.shape == (B, tower.output_dim)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in tower.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient for {name}"


@pytest.mark.parametrize("name,size", IMAGE_CASES["timm"])
def test_image_tower_contract(name, size):
    tower = IMAGE_TOWERS.create("timm", name, pretrained=False, image_size=size)
    _check_tower(tower, _batch(tower.preprocess.size, k=2))


@pytest.mark.parametrize("prefix", sorted(TEXT_CASES))
def test_text_tower_contract(prefix):
    tower = _text_tower(prefix)
    _check_tower(tower, _batch(8, tokenize=tower.tokenize))


@pytest.mark.parametrize("prefix", sorted(DUAL_CASES))
def test_dual_encoder_contract(prefix):
    dual = DUAL_ENCODERS.create(prefix, DUAL_CASES[prefix], pretrained=False, texts=TEXTS)
    img_params = {id(p) for p in dual.image.parameters()}
    assert not img_params & {id(p) for p in dual.text.parameters()}, "image and text towers must not share params"
    batch = _batch(dual.image.preprocess.size, tokenize=dual.text.tokenize)
    _check_tower(dual.image, batch)
    _check_tower(dual.text, batch)


def test_logits_head_passes_a_tfidf_towers_logits_through():
    text = TEXT_TOWERS.create("tfidf", "word1-2", texts=TEXTS, num_outputs=5)
    model = ProductClassifier(None, text, num_classes=5, fusion="logits")
    batch = _batch(8, tokenize=text.tokenize)
    assert torch.equal(model(batch)["logits"], text(batch))
    with pytest.raises(ValueError, match="a tower of 5 outputs"):
        ProductClassifier(None, TEXT_TOWERS.create("tfidf", "word1-2", texts=TEXTS, num_outputs=3), 5, "logits")


@pytest.mark.parametrize("fusion", [f for f in FUSIONS.list() if f != "logits"])
def test_fusion_classifier_contract_and_frozen_towers(fusion):
    image = IMAGE_TOWERS.create("timm", "test_resnet", pretrained=False, image_size=32)
    text = _text_tower("tiny")
    model = ProductClassifier(image, text, num_classes=5, fusion=fusion, fusion_dim=24, head_hidden=16)
    set_trainable(model.image_encoder, False)
    out = model(_batch(32, k=2, tokenize=text.tokenize))
    assert set(out) == {
        "logits",
        "image_features",
        "text_features",
        "aux_logits",
        "embeddings",
        "class_embeddings",
        "logit_scale",
    }
    assert out["embeddings"] is None and out["class_embeddings"] is None and out["logit_scale"] is None
    assert out["logits"].shape == (B, 5) and torch.isfinite(out["logits"]).all()
    assert out["image_features"].shape == (B, image.output_dim)
    assert out["text_features"].shape == (B, text.output_dim)
    assert len(out["aux_logits"]) == (2 if fusion == "late" else 0)
    loss = out["logits"].logsumexp(-1).mean() + sum(a.logsumexp(-1).mean() for a in out["aux_logits"])
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("image_encoder"):
            assert p.grad is None, f"frozen {name} got a gradient"
        elif name != "missing_image":  # every row has an image here, so the placeholder is unused
            assert p.grad is not None, f"no gradient for {name}"


def test_missing_image_uses_learned_placeholder():
    image = IMAGE_TOWERS.create("timm", "test_resnet", pretrained=False, image_size=32)
    model = ProductClassifier(image, None, num_classes=3, head_hidden=0)
    with torch.no_grad():
        model.missing_image.fill_(7.0)
    batch = _batch(32, k=2)
    batch["image_mask"][1] = False  # product 1 has no usable image
    feats = model(batch)["image_features"]
    assert torch.all(feats[1] == 7.0) and not torch.all(feats[0] == 7.0)


def test_train_last_n_blocks():
    tower = _text_tower("tiny")
    set_trainable(tower, True, last_n_blocks=1)
    blocks = tower.blocks()
    assert len(blocks) == 2
    assert all(p.requires_grad for p in blocks[1].parameters())
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert not any(p.requires_grad for p in tower.model.embeddings.parameters())


CLASS_TEXTS = [["soft wool"], ["silk", "satin sheen"], ["merino"], ["a weave of {x}"]]


@pytest.mark.parametrize("head", ["mlp", "class_text"])
@pytest.mark.parametrize("mtype", ["image", "text", "fusion", "dual"])
def test_create_classifier_rebuilds_from_assets(mtype, head, tmp_path):
    from aisle.models import save_model_assets
    from aisle.serialization import load_weights, save_weights

    sections = {
        "image": {"name": "timm:test_resnet", "pretrained": False},
        "text": {"name": "tiny:bert", "max_length": 16},
        "dual": {"name": "hf-clip:tiny"},
    }
    mcfg = ModelConfig.model_validate(
        {
            "type": mtype,
            "image_size": 32,
            "fusion_dim": 16,
            "head_hidden": 16,
            **{k: v for k, v in sections.items() if k in MODEL_TOWERS[mtype].values()},
            "head": head,
            "embed_dim": 20,
            **({"class_text_tower": sections["text"]} if head == "class_text" and mtype == "image" else {}),
        }
    )
    model = create_classifier(mcfg, 4, TEXTS, class_texts=CLASS_TEXTS if head == "class_text" else None).eval()
    save_model_assets(model, mcfg, tmp_path / "assets")
    save_weights(model, tmp_path / "w.safetensors")
    again = load_weights(create_classifier(mcfg, 4, assets=tmp_path / "assets"), tmp_path / "w.safetensors").eval()
    tok = model.text_encoder.tokenize if model.text_encoder is not None else None
    batch = _batch(32, tokenize=tok)
    with torch.no_grad():
        assert torch.allclose(model(batch)["logits"], again(batch)["logits"], atol=1e-5)
    if head == "class_text":  # the class texts travel with the assets: re-encoding them gives the saved buffer
        assert again.class_texts == CLASS_TEXTS
        saved = again.head.class_features.clone()
        assert torch.allclose(saved.norm(dim=-1), torch.ones(4))  # encoded (unit rows), not the zeros it starts as
        again.refresh_class_texts()
        assert torch.allclose(again.head.class_features, saved, atol=1e-5)


def test_registry_errors():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(object)
    with pytest.raises(ValueError, match="valid choices: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="prefix one of"):
        parse_tower_name("resnet18", IMAGE_TOWERS.list())
    with pytest.raises(ValueError, match="unknown fusion"):
        FUSIONS.get("bogus")


@pytest.mark.parametrize("kind", ["timm", *sorted(DUAL_CASES)])
def test_uint8_pixels_are_normalised_by_the_tower(kind):
    """The loaders ship uint8 pixels and the tower normalises them: the same features as normalising first."""
    import numpy as np
    from PIL import Image

    from aisle.data.transforms import build_image_transform

    torch.manual_seed(0)
    tower = (
        IMAGE_TOWERS.create("timm", "test_resnet", pretrained=False, image_size=32)
        if kind == "timm"
        else DUAL_ENCODERS.create(kind, "tiny", pretrained=False, texts=TEXTS).image
    ).eval()
    pre = tower.preprocess
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)) for i in range(B)]
    raw = torch.stack([build_image_transform(pre.size, False, pre.mean, pre.std, normalize=False)(im) for im in images])
    ref = torch.stack([build_image_transform(pre.size, False, pre.mean, pre.std)(im) for im in images])
    assert raw.dtype == torch.uint8 and ref.dtype == torch.float32
    mask = torch.ones(B, 1, dtype=torch.bool)
    with torch.no_grad():
        a = tower({"image": raw[:, None], "image_mask": mask})
        b = tower({"image": ref[:, None], "image_mask": mask})
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prefix", ["hf-blip", "hf-clip", "hf-siglip"])
def test_dual_text_view_masks_padding_so_a_text_reads_the_same_in_any_batch(prefix):
    """A dual encoder trained here masks its padding and reads batches trimmed to their longest row: a row's
    features do not depend on the rows beside it, on how far it is padded, or on what the padding holds."""
    text = DUAL_ENCODERS.create(prefix, "tiny", texts=TEXTS).text.eval()
    short, long = "silk satin", "soft wool knit cushion with a merino woollen blend and a satin silken weave"
    alone, batch = text.tokenize([short]), text.tokenize([short, long])
    padded = text.tokenizer(
        [short, long], padding="max_length", max_length=text.max_length, truncation=True, return_tensors="pt"
    )
    assert not text.fixed_length
    assert alone["input_ids"].shape[1] < batch["input_ids"].shape[1] < padded["input_ids"].shape[1], "trimmed"
    garbled = {k: v.clone() for k, v in padded.items()}
    garbled["input_ids"][0, garbled["attention_mask"][0] == 0] = 5  # every padded position of the short row
    with torch.no_grad():
        ref = text(alone)[0]
        for name, other in {"batched": batch, "max-length": padded, "garbled padding": garbled}.items():
            assert torch.allclose(ref, text(other)[0], atol=1e-5), name


def test_a_siglip_trained_here_pools_each_rows_last_real_token():
    """It used to pool position -1 of max-length batches (a pad for short rows): the same vector as before for a
    row that fills max_length, and the row's own last token (its [SEP]) instead of a pad for a shorter row."""
    text = DUAL_ENCODERS.create("hf-siglip", "tiny", max_length=8, texts=TEXTS).text.eval()
    enc = text.tokenizer(
        ["soft wool knit cushion silk satin sheen merino", "silk satin"],
        padding="max_length",
        max_length=8,
        truncation=True,
        return_tensors="pt",
    )
    assert enc["attention_mask"][0].all() and not enc["attention_mask"][1].all()
    with torch.no_grad():
        before = text.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        now = text(dict(enc))
        sep = text.encoder(**enc).last_hidden_state[1, int(enc["attention_mask"][1].sum()) - 1]
    assert torch.allclose(now[0], before[0], atol=1e-5), "a full row's last real token is its last position"
    assert not torch.allclose(now[1], before[1], atol=1e-3), "a short row is no longer pooled at a pad"
    assert torch.allclose(now[1], text.encoder.head(sep), atol=1e-5)


def test_a_pretrained_siglip_reads_texts_as_it_was_trained(tmp_path):
    """A pretrained SigLIP checkpoint gets no mask and every text padded to max_length, pooled at the last position
    (its own pooler, unchanged); the same folder with random weights (trained here) masks and trims."""
    from transformers import SiglipImageProcessor

    from aisle.models.dual import _tiny_hf_dual

    model, tokenizer = _tiny_hf_dual("siglip", TEXTS, 16, 32)
    for part in (model, tokenizer, SiglipImageProcessor(size={"height": 32, "width": 32})):
        part.save_pretrained(tmp_path)
    text = DUAL_ENCODERS.create("hf-siglip", str(tmp_path), pretrained=True, max_length=16).text.eval()
    scratch = DUAL_ENCODERS.create("hf-siglip", str(tmp_path), pretrained=False, max_length=16).text
    assert (text.reading, scratch.reading) == ("as_trained", "last_token")
    assert text.fixed_length and not scratch.fixed_length
    enc = text.tokenize(["silk satin", "soft wool knit cushion"])
    assert enc["input_ids"].shape == (2, 16), "padded to max_length"
    with torch.no_grad():
        expected = model.eval().text_model(input_ids=enc["input_ids"]).pooler_output  # no mask
        assert torch.allclose(text(enc), expected, atol=1e-5)


@pytest.mark.parametrize("prefix", sorted(DUAL_CASES))
def test_dual_image_view_runs_at_another_size_for_multi_scale_inference(prefix):
    """A ViT's position embeddings follow the image size (``infer.scales``); at its own size nothing changes."""
    image = DUAL_ENCODERS.create(prefix, DUAL_CASES[prefix], pretrained=False, texts=TEXTS).image.eval()
    size = image.preprocess.size
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (2, 1, 3, size + 8, size + 8), dtype=torch.uint8)  # one more patch per side
    mask = torch.ones(2, 1, dtype=torch.bool)
    with torch.no_grad():
        native = image({"image": pixels[..., :size, :size], "image_mask": mask})
        larger = image({"image": pixels, "image_mask": mask})
        again = image({"image": pixels[..., :size, :size], "image_mask": mask})
    assert larger.shape == native.shape == (2, image.output_dim) and torch.isfinite(larger).all()
    assert not torch.allclose(larger, native)
    assert torch.equal(native, again)  # the resized embeddings were for that call only


def _tiny_blip_folder(folder, architecture: str = "BlipForConditionalGeneration"):
    """A tiny BLIP checkpoint saved as the hub has it: weights, config, tokenizer and image processor."""
    import json

    from transformers import BlipImageProcessor

    from aisle.models.dual import _tiny_hf_dual

    model, tokenizer = _tiny_hf_dual("blip", TEXTS, 16, 32)
    for part in (model, tokenizer, BlipImageProcessor(size={"height": 32, "width": 32})):
        part.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BlipForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    return model.eval(), tokenizer


def test_blip_reads_a_captioning_checkpoint_as_two_towers(tmp_path):
    """``hf-blip:<folder>`` loads the captioner's weights: the image view is its vision model's pooled output; the
    text view its decoder on the text alone (causal, [DEC] first, no image) averaged over the real tokens."""
    model, tokenizer = _tiny_blip_folder(tmp_path)
    model.config.text_config.bos_token_id = dec = len(tokenizer) - 1  # a [DEC] id the tokenizer never puts first
    model.config.save_pretrained(tmp_path)
    dual = DUAL_ENCODERS.create("hf-blip", str(tmp_path), pretrained=True, max_length=16)
    image, text = dual.image.eval(), dual.text.eval()
    assert image.preprocess.size == 32 and image.output_dim == text.output_dim == 32
    texts = ["silk satin", "soft wool knit cushion"]
    enc = text.tokenize(texts)
    assert (enc["input_ids"][:, 0] == dec).all(), "every text starts with the decoder's [DEC]"
    pixels = torch.randn(2, 3, 32, 32)
    ref_ids = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = ref_ids["input_ids"].clone(), ref_ids["attention_mask"]
    ids[:, 0] = dec
    with torch.no_grad():
        states = model.text_decoder.bert(input_ids=ids, attention_mask=mask, is_decoder=True).last_hidden_state
        expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(text(enc), expected, atol=1e-5)
        got = image({"image": pixels[:, None], "image_mask": torch.ones(2, 1, dtype=torch.bool)})
        assert torch.allclose(got, model.vision_model(pixel_values=pixels).pooler_output, atol=1e-5)
    assert not any("crossattention" in n for n, _ in text.named_parameters()), "a text-only view"


def test_blip_refuses_a_checkpoint_without_the_captioning_decoder(tmp_path):
    _tiny_blip_folder(tmp_path, architecture="BlipForImageTextRetrieval")
    with pytest.raises(ValueError, match="BlipForImageTextRetrieval checkpoint.*BlipForConditionalGeneration"):
        DUAL_ENCODERS.create("hf-blip", str(tmp_path), pretrained=True, max_length=16)


def test_open_clip_without_a_weights_tag_refuses_pretrained_rather_than_training_random_weights():
    with pytest.raises(ValueError, match=r"open_clip:RN50/<tag>.*pretrained: false"):
        DUAL_ENCODERS.create("open_clip", "RN50", pretrained=True)
    assert DUAL_ENCODERS.create("open_clip", "tiny", pretrained=True, texts=TEXTS).text is not None  # test preset
