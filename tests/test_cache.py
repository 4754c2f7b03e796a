"""Feature cache correctness: equal to uncached, invalidated by exactly what changed, never stale."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from aisle.cache.encode import EncodeOptions, encode_products, tower_features
from aisle.config import DataConfig
from aisle.data.demo import write_demo_catalogue
from aisle.data.products import load_products
from aisle.models import IMAGE_TOWERS, TEXT_TOWERS


@pytest.fixture()
def catalogue(tmp_path) -> Path:
    write_demo_catalogue(tmp_path / "cat", n_train=30, n_test=6, seed=5, image_size=32)
    return tmp_path / "cat"


@pytest.fixture()
def towers():
    torch.manual_seed(0)
    image = IMAGE_TOWERS.create("timm", "test_resnet", pretrained=False, image_size=32)
    text = TEXT_TOWERS.create("tiny", "bert", texts=["soft wool knit", "silk satin"], max_length=16)
    return image, text


def _products(cat: Path):
    return load_products(cat / "train.csv", DataConfig())


def _close(a, b):
    return np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-2, atol=1e-3)


def test_cached_equals_uncached_and_second_call_computes_nothing(catalogue, towers, tmp_path, caplog):
    image, text = towers
    products = _products(catalogue)
    for tower in (image, text):
        direct, has = encode_products(tower, products)
        cached, has_c = tower_features(tower, products, tmp_path / "c")
        assert cached.dtype == np.float16 and cached.shape == direct.shape
        assert _close(cached, direct)
        assert (has == has_c).all()
        again, _ = tower_features(tower, products, tmp_path / "c")
        assert np.array_equal(again, cached)
    img_has = encode_products(image, products)[1]
    broken = [i for i, p in enumerate(products.image_paths) if not p or Path(p[0]).stat().st_size == 0]
    assert broken and not img_has[broken].any(), "missing/empty images are flagged in the mask"


def test_encoded_rows_keep_input_order_with_length_sorting(catalogue, towers):
    _, text = towers
    products = _products(catalogue)
    texts = list(products.texts)
    assert len({len(t) for t in texts}) > 3, "the check needs texts of different lengths"
    feats, _ = encode_products(text, products, opts=EncodeOptions(batch_size=4))
    with torch.inference_mode():
        one_by_one = np.stack([text.eval()(text.tokenize([t]))[0].numpy() for t in texts])
    np.testing.assert_allclose(feats, one_by_one, rtol=1e-4, atol=1e-5)


def test_channels_last_gives_the_same_features(catalogue, towers):
    image, _ = towers
    products = _products(catalogue)
    before, _ = encode_products(image, products)
    image.use_channels_last()
    after, _ = encode_products(image, products)
    conv = next(p for p in image.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_hflip_view_differs_and_matches_flipped_pixels(catalogue, towers, tmp_path):
    image, _ = towers
    products = _products(catalogue)
    orig, _ = tower_features(image, products, tmp_path / "c", view="orig")
    flip, _ = tower_features(image, products, tmp_path / "c", view="hflip")
    assert not _close(orig, flip)
    assert _close(flip, encode_products(image, products, view="hflip")[0])


def test_changed_image_invalidates_only_that_entry(catalogue, towers, tmp_path):
    image, _ = towers
    products = _products(catalogue)
    before, _ = tower_features(image, products, tmp_path / "c")
    victim = next(i for i, p in enumerate(products.image_paths) if p and Path(p[0]).stat().st_size > 0)
    Image.new("RGB", (32, 32), (255, 255, 0)).save(products.image_paths[victim][0])
    calls = []
    import aisle.cache.encode as enc

    real = enc.encode_products

    def spy(tower, prods, *a, **k):
        calls.append(list(prods.ids))
        return real(tower, prods, *a, **k)

    enc.encode_products = spy
    try:
        after, _ = tower_features(image, products, tmp_path / "c")
    finally:
        enc.encode_products = real
    assert calls == [[products.ids[victim]]], "exactly the changed image is encoded again"
    changed = ~np.all(np.isclose(before.astype(np.float32), after.astype(np.float32)), axis=1)
    assert changed[victim] and changed.sum() == 1


def test_changed_text_model_or_preprocessing_invalidates(catalogue, towers, tmp_path):
    image, text = towers
    products = _products(catalogue)
    t0, _ = tower_features(text, products, tmp_path / "c")
    products.texts[0] = "completely different words here"
    t1, _ = tower_features(text, products, tmp_path / "c")
    assert not _close(t0[0], t1[0]) and _close(t0[1:], t1[1:])

    i0, _ = tower_features(image, products, tmp_path / "c")
    i_small, _ = tower_features(image, products, tmp_path / "c", image_size=24)  # preprocessing changed
    assert _close(i_small, encode_products(image, products, image_size=24)[0])
    assert not _close(i0, i_small)
    with torch.no_grad():
        next(image.parameters()).add_(0.5)  # the weights changed
    i1, _ = tower_features(image, products, tmp_path / "c")
    assert _close(i1, encode_products(image, products)[0]) and not _close(i0, i1)


def test_no_stale_reuse_across_datasets(tmp_path, towers):
    image, text = towers
    write_demo_catalogue(tmp_path / "a", n_train=20, n_test=4, seed=6, image_size=32)
    write_demo_catalogue(tmp_path / "b", n_train=20, n_test=4, seed=7, image_size=32)
    pa, pb = _products(tmp_path / "a"), _products(tmp_path / "b")
    assert list(pa.ids) == list(pb.ids), "same ids, different content: the trap a path/id key falls into"
    fa, _ = tower_features(image, pa, tmp_path / "c")
    fb, _ = tower_features(image, pb, tmp_path / "c")
    assert _close(fb, encode_products(image, pb)[0])
    assert not _close(fa, fb)
    tower_features(text, pa, tmp_path / "c")
    tb, _ = tower_features(text, pb, tmp_path / "c")
    assert _close(tb, encode_products(text, pb)[0])


def test_training_with_cache_matches_uncached_head_training(tmp_path):
    """Stage with frozen towers: cached and uncached runs (same seed, no augmentation difference for text)."""
    import yaml

    from aisle.cli import main

    write_demo_catalogue(tmp_path / "cat", n_train=40, n_test=4, seed=8, image_size=32)
    base = {
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {"type": "text", "text": {"name": "tiny:bert", "max_length": 16}, "head_hidden": 16},
        "train": {"epochs": 2, "batch_size": 8, "stages": [{"name": "s1", "freeze_encoders": True}]},
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache")},
    }
    results = {}
    for flag in (True, False):
        cfg = {**base, "runtime": {**base["runtime"], "feature_cache": flag}}
        (tmp_path / f"{flag}.yaml").write_text(yaml.safe_dump(cfg))
        assert main(["-q", "train", "-c", str(tmp_path / f"{flag}.yaml"), "--run-dir", str(tmp_path / str(flag))]) == 0
        results[flag] = pd.read_csv(tmp_path / str(flag) / "s1" / "oof.csv").drop(
            columns=["id", "fold", "label", "pred"]
        )
    assert any((tmp_path / "cache").rglob("*.npy"))
    assert np.allclose(results[True].to_numpy(), results[False].to_numpy(), atol=2e-3)


def test_frozen_tower_features_looked_up_once_per_run(tmp_path, monkeypatch):
    """Two folds and two frozen stages: each frozen tower's features are fetched once for the whole run, but a
    stage whose tower was trained earlier (init_from a stage that changed it) is encoded again for each fold."""
    import aisle.cache.encode as encode
    from aisle.config import validate_config
    from aisle.training import run_cv

    write_demo_catalogue(tmp_path / "cat", n_train=40, n_test=4, seed=8, image_size=32)
    calls = []
    real = encode.tower_features
    monkeypatch.setattr(
        encode, "tower_features", lambda tower, *a, **k: calls.append(tower.modality) or real(tower, *a, **k)
    )
    cfg = {
        "data": {"train_csv": str(tmp_path / "cat" / "train.csv"), "folds": 2},
        "model": {
            "type": "fusion",
            "image_size": 32,
            "head_hidden": 16,
            "image": {"name": "timm:test_resnet", "pretrained": False},
            "text": {"name": "tiny:bert", "max_length": 16},
        },
        "runtime": {"num_workers": 0, "cache_dir": str(tmp_path / "cache")},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "stages": [
                {"name": "s1", "freeze_encoders": True},
                {"name": "s2", "freeze_encoders": True},
                {"name": "s3"},
                {"name": "s4", "freeze_encoders": True, "init_from": "s3"},
            ],
        },
    }
    run_cv(validate_config(cfg), tmp_path / "run")
    assert sorted(calls) == sorted(["image", "text"] + ["image", "text"] * 2)


def _dataset(products, size: int, train: bool, decoded=None, augment: str = "minimal"):
    from aisle.data.dataset import ImageReading, Precomputed, ProductDataset
    from aisle.data.transforms import build_image_transform

    return ProductDataset(
        products,
        image_transform=build_image_transform(size, train=train, augment=augment),
        reading=ImageReading(placeholder_size=size),
        train=train,
        precomputed=Precomputed(decoded=decoded),
    )


# evaluation, and training under every augmentation policy (each is deterministic under a seed)
@pytest.mark.parametrize(
    ("train", "augment"), [(False, "minimal"), *((True, a) for a in ("none", "minimal", "standard", "strong"))]
)
def test_decoded_cache_gives_the_uncached_pixels(tmp_path, train, augment):
    from aisle.cache.decoded import DecodedImages

    cat = tmp_path / "cat"
    write_demo_catalogue(cat, n_train=12, n_test=2, seed=5, image_size=40)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate([(300, 180), (60, 80), (97, 413)]):  # a large, a small and a tall photo
        noise = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(noise).save(sorted((cat / "images").glob("*.jpg"))[k], quality=90)
    products = _products(cat)
    dec = DecodedImages.build(products, 32, tmp_path / "c")
    plain, cached = _dataset(products, 32, train, augment=augment), _dataset(products, 32, train, dec, augment)
    for i in range(len(products.ids)):
        torch.manual_seed(i)  # the same random crop and flip for both
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["image_mask"], b["image_mask"]), i


def test_decoded_cache_never_holds_more_pixels_than_its_sources(tmp_path):
    from aisle.cache.decoded import DecodedImages

    cat = tmp_path / "cat"
    write_demo_catalogue(cat, n_train=12, n_test=2, seed=5, image_size=24)  # small sources (24 px)
    big = sorted((cat / "images").glob("*.jpg"))[0].with_suffix(".png")  # a large PNG: no DCT scales
    Image.new("RGB", (900, 600), (10, 200, 30)).save(big)
    sorted((cat / "images").glob("*.jpg"))[0].unlink()
    products = _products(cat)
    dec = DecodedImages.build(products, 64, tmp_path / "c")
    sources = 0
    for paths in products.image_paths:
        try:
            with Image.open(paths[0]) as im:
                sources += im.width * im.height
        except (OSError, IndexError):
            pass
    assert dec.pixels.size <= 3 * sources, "never upscaled"
    (j,) = [i for i, p in enumerate(products.image_paths) if p and p[0].endswith(".png")]
    assert dec.image(j).size == (192, 128), "over max_side (2 x 64): resized down to it, aspect kept"
    small = next(i for i, p in enumerate(products.image_paths) if p and p[0].endswith(".jpg") and dec.mask[i])
    assert dec.image(small).size == (24, 24), "kept at the source's size, not the working size"


def test_decoded_cache_says_when_it_is_not_worth_it(catalogue, tmp_path, caplog):
    from aisle.cache.decoded import DecodedImages

    products = _products(catalogue)  # 32 px images
    with caplog.at_level(logging.INFO, logger="aisle"):
        DecodedImages.build(products, 224, tmp_path / "c")
    assert any(
        "the images are small" in r.getMessage() and "decoded_cache: false" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aisle"):
        DecodedImages.build(products, 16, tmp_path / "c2")  # sources larger than the working size: worth it
    assert not any("the images are small" in r.getMessage() for r in caplog.records)


def test_decoded_image_cache(catalogue, tmp_path):
    from aisle.cache.decoded import DecodedImages

    products = _products(catalogue)
    dec = DecodedImages.build(products, 40, tmp_path / "c")
    ok = next(i for i, p in enumerate(products.image_paths) if p and Path(p[0]).stat().st_size > 1000)
    direct = Image.open(products.image_paths[ok][0]).convert("RGB")
    assert np.array_equal(np.asarray(dec.image(ok)), np.asarray(direct))
    broken = [i for i, p in enumerate(products.image_paths) if not p or Path(p[0]).stat().st_size == 0]
    assert all(dec.image(i) is None for i in broken)
    again = DecodedImages.build(products, 40, tmp_path / "c")  # from disk: same rows, nothing decoded
    assert np.array_equal(np.asarray(again.pixels), np.asarray(dec.pixels))
    sub = dec.subset(np.array([ok, broken[0]]))
    assert np.array_equal(np.asarray(sub.image(0)), np.asarray(dec.image(ok))) and sub.image(1) is None
    ds = _dataset(products, 32, False, dec)
    item = ds[ok]
    assert item["image"].shape == (1, 3, 32, 32) and item["image_mask"].all()
    assert not ds[broken[0]]["image_mask"].any()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(products.image_paths[ok][0])
    changed = DecodedImages.build(products, 40, tmp_path / "c")  # a changed image: a new cache, new pixels
    assert not np.array_equal(np.asarray(changed.image(ok)), np.asarray(dec.image(ok)))


# ---------------------------------------------------------------- the data-root fence and the cache keys


def _in_thread(fn, timeout: float = 10.0):
    """``fn()``'s result, or a test failure if it blocks (a daemon thread: a hang cannot stop pytest)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert out, f"blocked for {timeout} s"
    return out[0]


def test_file_digest_hashes_only_files_the_fence_accepts(tmp_path):
    from aisle.cache.keys import file_digest

    root = tmp_path / "root"
    root.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "a.png")
    (tmp_path / "secret.png").write_bytes((root / "a.png").read_bytes())  # the same bytes, outside the root
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    os.mkfifo(root / "pipe")
    (root / "pipe.png").symlink_to(root / "pipe")
    (root / "folder.png").mkdir()
    roots = [root]
    content = file_digest(str(root / "a.png"), roots)
    assert len(content) == 32 and content == file_digest(str(tmp_path / "secret.png"), [])  # no roots: no fence
    assert file_digest(str(root / "link.png"), roots) == "outside_data_root"
    assert file_digest(str(root / ".." / "secret.png"), roots) == "outside_data_root"
    assert _in_thread(lambda: file_digest(str(root / "pipe.png"), roots)) == "not_a_file"  # never opened
    assert file_digest(str(root / "folder.png"), roots) == "not_a_file"
    assert file_digest(str(root / "nope.png"), roots) == "missing"
    assert file_digest(None, roots) == "none"


def test_a_refused_image_never_shares_a_key_with_an_accepted_one(make_catalogue, tmp_path):
    from aisle.cache.keys import image_item_keys

    cat = make_catalogue([{"id": "b", "title": "x"}, {"id": "a", "title": "y"}], images={"a.png": (0, 0, 255)})
    (tmp_path / "secret.png").write_bytes((cat.images / "a.png").read_bytes())
    (cat.images / "b.png").symlink_to(tmp_path / "secret.png")  # found by the image index, refused by the fence
    products = load_products(cat.csv, DataConfig())
    assert [len(p) for p in products.image_paths] == [1, 1]
    for mode in ("first", "mean_pool"):
        keys = image_item_keys(products.image_paths, mode, 4, products.roots)
        assert keys[0] != keys[1]
        assert keys == image_item_keys(products.image_paths, mode, 4, products.roots)  # still a pure function
    assert len(set(image_item_keys(products.image_paths, "first", 1, []))) == 1  # what the side door did


def test_decoded_cache_keeps_a_valid_image_whose_bytes_equal_a_refused_one(make_catalogue, tmp_path):
    from aisle.cache.decoded import DecodedImages

    cat = make_catalogue([{"id": "b", "title": "x"}, {"id": "a", "title": "y"}], images={"a.png": (0, 0, 255)})
    (tmp_path / "secret.png").write_bytes((cat.images / "a.png").read_bytes())
    (cat.images / "b.png").symlink_to(tmp_path / "secret.png")  # the refused one comes first
    dec = DecodedImages.build(load_products(cat.csv, DataConfig()), 16, tmp_path / "c")
    assert dec.image(0) is None, "the refused image is never read"
    blue = dec.image(1)
    assert blue is not None and np.asarray(blue)[..., 2].mean() > 250 and np.asarray(blue)[..., 0].mean() < 5


# ---------------------------------------------------------------- decoded cache integrity


@pytest.mark.parametrize("damage", ["flip_a_byte", "cut_short"])
def test_damaged_decoded_cache_is_rebuilt_with_a_warning(catalogue, tmp_path, caplog, damage):
    from aisle.cache.decoded import DecodedImages

    products = _products(catalogue)
    first = DecodedImages.build(products, 24, tmp_path / "c")
    original = np.array(first.pixels)
    (data,) = (tmp_path / "c" / "decoded").glob("*.u8")
    del first
    raw = bytearray(data.read_bytes())
    if damage == "flip_a_byte":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) - 100]
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="aisle"):
        again = DecodedImages.build(products, 24, tmp_path / "c")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(data) in warnings[0] and "rebuilding" in warnings[0]
    assert np.array_equal(np.asarray(again.pixels), original)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aisle"):
        DecodedImages.build(products, 24, tmp_path / "c")  # whole again: loaded without a word
    assert caplog.records == []


def test_loaders_on_in_memory_features_start_no_workers(catalogue, towers):
    from aisle.data.dataset import Precomputed
    from aisle.data.loaders import LoaderOptions, build_loader

    image, text = towers
    products = _products(catalogue)
    n = len(products.ids)
    opts = LoaderOptions.create(DataConfig(), batch_size=8, num_workers=2)
    features = Precomputed(
        image_features=([np.zeros((n, 4), np.float32)], np.ones(n, bool)), text_features=np.zeros((n, 4))
    )
    args = (products, None, opts, True, image.preprocess, text.tokenize)
    assert build_loader(*args, precomputed=features).num_workers == 0, "features already in memory"
    assert build_loader(*args).num_workers == 2, "pixels to decode and texts to tokenize"
    half = Precomputed(image_features=features.image_features)
    assert build_loader(*args, precomputed=half).num_workers == 2, "texts still to tokenize"


def test_the_image_pixel_limit_is_part_of_the_key(catalogue, towers, tmp_path):
    """An image refused under a low ``data.max_image_pixels`` is cached as a placeholder; raising the limit (what
    the refusal's message says to do) reads it, instead of the placeholder the cache holds."""
    image, _ = towers
    products = _products(catalogue)
    _, refused = tower_features(image, products, tmp_path / "c", opts=EncodeOptions(max_pixels=100))  # 32x32 px
    _, read = tower_features(image, products, tmp_path / "c")
    assert not refused.any() and read.any()
    _, again = tower_features(image, products, tmp_path / "c", opts=EncodeOptions(max_pixels=100))
    assert not again.any()
