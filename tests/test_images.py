"""Finding product images, opening broken ones without stopping, and the multi-image dataset modes."""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from aisle.config import DataConfig
from aisle.data import (
    ProductDataset,
    build_image_index,
    build_image_transform,
    build_whitespace_text_transform,
    load_products,
    open_image,
    probe_image,
)
from aisle.data.dataset import ImageReading
from aisle.data.images import IMAGE_EXTENSIONS, file_problem
from conftest import noise_jpeg_bytes, write_broken, write_image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
SIZE = 8
EVAL_TF = build_image_transform(SIZE, train=False)


def dominant_channel(image: torch.Tensor) -> int:
    """0/1/2 for an image that was solid red/green/blue: (3, H, W) -> the channel with the largest mean."""
    return int(image.mean(dim=(1, 2)).argmax())


# ---------------------------------------------------------------- open_image / probe_image


def test_good_image_opens_as_rgb(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", GREEN)
    image, reason = open_image(path, [tmp_path])
    assert reason is None
    assert image.mode == "RGB" and image.size == (16, 16)
    assert image.getpixel((3, 3)) == GREEN
    probe = probe_image(path, [tmp_path])
    assert probe.ok and probe.reason is None and probe.size == (16, 16)


def test_greyscale_image_is_converted_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "g.png"
    Image.new("L", (10, 6), 77).save(path)
    image, reason = open_image(path, [tmp_path])
    assert reason is None and image.mode == "RGB" and image.getpixel((0, 0)) == (77, 77, 77)


@pytest.mark.parametrize(
    ("kind", "reason"), [("empty", "empty_file"), ("truncated", "truncated"), ("text", "not_an_image")]
)
def test_broken_file_reasons(tmp_path: Path, kind: str, reason: str) -> None:
    path = write_broken(tmp_path / "x.jpg", kind)
    assert open_image(path, [tmp_path]) == (None, reason)
    probe = probe_image(path, [tmp_path])
    assert not probe.ok and probe.reason == reason


def test_truncated_fixture_really_is_a_cut_real_jpeg(tmp_path: Path) -> None:
    # guard for the fixture itself: the whole file decodes, its first half does not
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(noise_jpeg_bytes())
    assert open_image(whole, [tmp_path])[1] is None
    half = write_broken(tmp_path / "half.jpg", "truncated")
    assert 0 < half.stat().st_size < whole.stat().st_size


def test_missing_file(tmp_path: Path) -> None:
    assert open_image(tmp_path / "nope.jpg", [tmp_path]) == (None, "missing")
    assert probe_image(tmp_path / "nope.jpg", [tmp_path]).reason == "missing"


def test_decompression_bomb_refused_by_max_pixels(tmp_path: Path) -> None:
    path = write_image(tmp_path / "big.png", RED, size=40)  # 1600 pixels
    assert open_image(path, [tmp_path], max_pixels=1000) == (None, "decompression_bomb")
    probe = probe_image(path, [tmp_path], max_pixels=1000)
    assert probe.reason == "decompression_bomb" and probe.size == (40, 40)
    assert open_image(path, [tmp_path], max_pixels=1600)[1] is None  # the limit itself is allowed


def test_dotdot_path_outside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_image(tmp_path / "secret.png", RED)
    sneaky = root / ".." / "secret.png"
    assert open_image(sneaky, [root]) == (None, "outside_data_root")
    assert probe_image(sneaky, [root]).reason == "outside_data_root"
    assert open_image(sneaky, [])[1] is None  # no roots: no restriction


def test_symlink_outside_root_is_refused_inside_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = write_image(tmp_path / "secret.png", RED)
    inside = write_image(root / "real.png", GREEN)
    (root / "out.png").symlink_to(outside)
    (root / "in.png").symlink_to(inside)
    assert open_image(root / "out.png", [root]) == (None, "outside_data_root")
    image, reason = open_image(root / "in.png", [root])
    assert reason is None and image.getpixel((0, 0)) == GREEN


# ---------------------------------------------------------------- decoding: orientation, depth, alpha, formats


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grey pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image, reason = open_image(tmp_path / "g16.png", [tmp_path])
    assert reason is None and image.mode == "RGB"
    grey = np.asarray(image)[..., 0].astype(int)
    assert np.abs(grey - (ramp >> 8)).max() <= 1  # the top byte: a ramp from black to white
    assert 120 < grey.mean() < 135


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_and_float_greyscale_are_scaled(tmp_path: Path, mode: str) -> None:
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    values = (ramp * 65535).astype(np.int32) if mode == "I" else ramp.astype(np.float32)
    Image.fromarray(values, mode).save(tmp_path / "g.tif")
    image, reason = open_image(tmp_path / "g.tif", [tmp_path])
    assert reason is None
    grey = np.asarray(image)[..., 0].astype(int)
    assert np.abs(grey - np.round(ramp * 255)).max() <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    wide = Image.new("RGB", (20, 10), RED)
    wide.paste(BLUE, (10, 0, 20, 10))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top, blue below
    wide.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    for draft in (None, (4, 4)):
        image, reason = open_image(tmp_path / "rot.jpg", [tmp_path], draft=draft)
        assert reason is None and image.width < image.height
    image, _ = open_image(tmp_path / "rot.jpg", [tmp_path])
    assert image.size == (10, 20)
    pixels = np.asarray(image, dtype=float)  # (H, W, 3)
    assert pixels[:8].mean((0, 1)).argmax() == 0 and pixels[12:].mean((0, 1)).argmax() == 2


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_transparent_pixels_become_white(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.png"
    if kind == "P":
        im = Image.new("P", (8, 8), 0)
        im.putpalette([0, 0, 0, 255, 0, 0])
        im.putpixel((0, 0), 1)
        im.save(path, transparency=0)  # palette entry 0 (black) is transparent
    else:
        im = Image.new(kind, (8, 8), (0, 0, 0, 0) if kind == "RGBA" else (0, 0))
        im.putpixel((0, 0), (255, 0, 0, 255) if kind == "RGBA" else (90, 255))
        im.save(path)
    image, reason = open_image(path, [tmp_path])
    assert reason is None and image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)  # transparent black: white, not black
    assert image.getpixel((0, 0)) == ((255, 0, 0) if kind != "LA" else (90, 90, 90))  # opaque pixels kept


def test_half_transparent_pixels_blend_with_white(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (0, 0, 255, 128)).save(tmp_path / "half.png")
    r, g, b = open_image(tmp_path / "half.png", [tmp_path])[0].getpixel((1, 1))
    assert abs(r - 127) <= 2 and abs(g - 127) <= 2 and b == 255


def test_cmyk_jpeg_opens_as_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # red in CMYK
    image, reason = open_image(tmp_path / "c.jpg", [tmp_path])
    assert reason is None and image.mode == "RGB"
    assert np.abs(np.asarray(image.getpixel((3, 3))) - RED).max() <= 3


@pytest.mark.parametrize("ext", [".gif", ".bmp", ".tif", ".tiff", ".webp"])
def test_more_formats_read_their_first_frame(tmp_path: Path, ext: str) -> None:
    assert ext in IMAGE_EXTENSIONS
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    path = tmp_path / f"x{ext}"
    if ext == ".bmp":
        first.save(path)
    else:  # animated GIF / WebP, multi-page TIFF
        first.save(path, save_all=True, append_images=[second], **({"lossless": True} if ext == ".webp" else {}))
        assert Image.open(path).n_frames == 2
    image, reason = open_image(path, [tmp_path])
    assert reason is None and image.mode == "RGB"
    assert np.abs(np.asarray(image.getpixel((3, 3))) - RED).max() <= 3
    assert build_image_index(tmp_path, ["x"]) == {"x": [str(path)]}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own note on the refused image
def test_a_94_megapixel_header_is_refused_only_over_max_pixels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = _png_header_only(tmp_path / "big.png", 10_000, 9_400)  # over PIL's own limit (89.5 MP)
    probe = probe_image(path, [tmp_path], max_pixels=90_000_000)
    assert probe.reason == "decompression_bomb" and probe.size == (10_000, 9_400)  # refused from the header
    allowed = probe_image(path, [tmp_path], max_pixels=100_000_000)
    assert allowed.reason == "truncated"  # under our limit: PIL's guard does not refuse it, its data is cut off


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own note on the refused image
def test_a_real_94_megapixel_jpeg_follows_max_pixels_both_ways_and_decodes_small(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = tmp_path / "huge.jpg"
    Image.new("L", (10_000, 9_400), 200).save(path, quality=30)  # 94 MP, a whole decodable JPEG of a few kB
    assert open_image(path, [tmp_path])[1] == "decompression_bomb", "refused under the default (PIL's 89.5 MP)"
    assert open_image(path, [tmp_path], max_pixels=90_000_000)[1] == "decompression_bomb"
    image, reason = open_image(path, [tmp_path], max_pixels=200_000_000, draft=(224, 224))
    assert reason is None and image is not None and image.mode == "RGB"
    assert min(image.size) >= 224 and max(image.size) <= 1_250, "decoded at a reduced DCT scale, not 94 MP"


def test_pils_own_bomb_guard_never_refuses_an_image_under_max_pixels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1000 pixels and refuses above 2000
    warned = write_image(tmp_path / "w.png", RED, size=40)  # 1600 pixels
    refused = write_image(tmp_path / "r.png", RED, size=50)  # 2500 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be taken for a bomb
        assert open_image(warned, [tmp_path], max_pixels=5000)[1] is None
        assert open_image(refused, [tmp_path], max_pixels=5000)[1] is None
        assert open_image(refused, [tmp_path], max_pixels=2000) == (None, "decompression_bomb")


# ---------------------------------------------------------------- never open what is not a regular file


def _in_thread(fn, timeout: float = 10.0):
    """``fn()``'s result, or a test failure if it blocks (a daemon thread: a hang cannot stop pytest)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert out, f"blocked for {timeout} s"
    return out[0]


def test_a_fifo_under_the_data_root_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "pipe.jpg").symlink_to(fifo)
    (tmp_path / "folder.jpg").mkdir()
    for path in (fifo, tmp_path / "pipe.jpg", tmp_path / "folder.jpg"):
        assert _in_thread(lambda p=path: open_image(p, [tmp_path])) == (None, "not_a_file")
        assert _in_thread(lambda p=path: probe_image(p, [tmp_path])).reason == "not_a_file"
        assert file_problem(path, [tmp_path]) == "not_a_file"


def test_file_problem_needs_no_open(tmp_path: Path) -> None:
    good = write_image(tmp_path / "root" / "a.png", RED)
    (tmp_path / "root" / "empty.png").write_bytes(b"")
    outside = write_image(tmp_path / "secret.png", RED)
    assert file_problem(good, [tmp_path / "root"]) is None
    assert file_problem(tmp_path / "root" / "empty.png", [tmp_path / "root"]) == "empty_file"
    assert file_problem(tmp_path / "root" / "nope.png", [tmp_path / "root"]) == "missing"
    assert file_problem(outside, [tmp_path / "root"]) == "outside_data_root"
    assert file_problem(outside, []) is None


# ---------------------------------------------------------------- build_image_index


def test_index_exact_first_then_natural_order(tmp_path: Path) -> None:
    d = tmp_path / "images"
    for name in ["p1_10.jpg", "p1_2.png", "p1_1.jpg", "p1.jpg"]:
        write_image(d / name)
    index = build_image_index(d, ["p1"])
    assert [Path(p).name for p in index["p1"]] == ["p1.jpg", "p1_1.jpg", "p1_2.png", "p1_10.jpg"]


def test_index_extra_images_without_exact_one(tmp_path: Path) -> None:
    d = tmp_path / "images"
    for name in ["p_2.jpg", "p_1.jpg"]:
        write_image(d / name)
    assert [Path(p).name for p in build_image_index(d, ["p"])["p"]] == ["p_1.jpg", "p_2.jpg"]


def test_index_ignores_non_images_and_unknown_ids(tmp_path: Path) -> None:
    d = tmp_path / "images"
    write_image(d / "a.JPG")  # extension case does not matter
    write_image(d / "a_1.webp")
    (d / "a.txt").write_text("x")
    (d / "a_2.json").write_text("{}")
    (d / "a_3.svg").write_text("<svg/>")  # not a format we decode
    write_image(d / "zzz.jpg")  # not a wanted id
    write_image(d / "ab.jpg")  # shares a prefix with 'a' but has no '_' after it
    index = build_image_index(d, ["a", "b"])
    assert set(index) == {"a"}
    assert [Path(p).name for p in index["a"]] == ["a.JPG", "a_1.webp"]


def test_index_ids_with_underscores(tmp_path: Path) -> None:
    d = tmp_path / "images"
    for name in ["sku_12.jpg", "sku_12_1.jpg", "sku_12_2.png", "other_x_1.jpg"]:
        write_image(d / name)
    index = build_image_index(d, ["sku_12", "other_x"])
    assert [Path(p).name for p in index["sku_12"]] == ["sku_12.jpg", "sku_12_1.jpg", "sku_12_2.png"]
    assert [Path(p).name for p in index["other_x"]] == ["other_x_1.jpg"]


def test_index_prefers_the_longest_matching_id(tmp_path: Path) -> None:
    d = tmp_path / "images"
    for name in ["a.jpg", "a_b.jpg", "a_b_1.jpg"]:
        write_image(d / name)
    index = build_image_index(d, ["a", "a_b"])
    assert [Path(p).name for p in index["a_b"]] == ["a_b.jpg", "a_b_1.jpg"]
    assert [Path(p).name for p in index["a"]] == ["a.jpg"]


def test_index_looks_one_folder_level_down_only(tmp_path: Path) -> None:
    d = tmp_path / "images"
    write_image(d / "sub" / "p1.jpg")
    write_image(d / "sub" / "p2_1.png")
    write_image(d / "sub" / "deeper" / "p3.jpg")
    index = build_image_index(d, ["p1", "p2", "p3"])
    assert index == {"p1": [str(d / "sub" / "p1.jpg")], "p2": [str(d / "sub" / "p2_1.png")]}


def test_index_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.image_dir"):
        build_image_index(tmp_path / "nope", ["a"])


# ---------------------------------------------------------------- image column


def test_image_column_with_several_relative_paths(make_catalogue) -> None:
    cat = make_catalogue(
        [{"id": "a", "image": "pics/a1.jpg; pics/a2.png"}, {"id": "b", "image": ""}, {"id": "c", "image": "pics/c.jpg"}]
    )
    write_image(cat.root / "pics" / "a1.jpg")
    write_image(cat.root / "pics" / "a2.png")
    products = load_products(cat.csv, DataConfig())
    root = cat.root.resolve()
    assert products.image_paths[0] == (str(root / "pics/a1.jpg"), str(root / "pics/a2.png"))
    assert products.image_paths[1] == ()
    assert products.image_paths[2] == (str(root / "pics/c.jpg"),)  # listed even though missing: reported later
    assert products.refused == []


def test_image_column_custom_separator(make_catalogue) -> None:
    cat = make_catalogue([{"id": "a", "images": "x.jpg|y.jpg"}])
    products = load_products(cat.csv, DataConfig(image_sep="|"))
    assert [Path(p).name for p in products.image_paths[0]] == ["x.jpg", "y.jpg"]


def test_image_column_path_outside_root_is_refused(make_catalogue, tmp_path: Path) -> None:
    write_image(tmp_path / "secret.png", RED)
    cat = make_catalogue([{"id": "a", "image": "../secret.png;ok.png"}], images={})
    write_image(cat.root / "ok.png", GREEN)
    products = load_products(cat.csv, DataConfig())
    assert [Path(p).name for p in products.image_paths[0]] == ["ok.png"]
    assert [(r.id, r.reason) for r in products.refused] == [("a", "outside_data_root")]
    assert products.refused[0].path.endswith("secret.png")


# ---------------------------------------------------------------- ProductDataset on broken images


@pytest.fixture
def broken_catalogue(make_catalogue, tmp_path: Path):
    ids = ["good", "missing", "empty", "trunc", "text", "bomb", "symlink"]
    cat = make_catalogue(
        [{"id": i, "title": f"t {i}", "label": "x"} for i in ids],
        images={"good.jpg": RED, "empty.jpg": "empty", "trunc.jpg": "truncated", "text.jpg": "text"},
    )
    write_image(cat.images / "bomb.png", RED, size=80)  # 6400 pixels; the truncated JPEG has 4096
    (cat.images / "symlink.jpg").symlink_to(write_image(tmp_path / "elsewhere.jpg", RED))
    return cat


def test_dataset_turns_every_broken_image_into_a_masked_placeholder(broken_catalogue, caplog) -> None:
    products = load_products(broken_catalogue.csv, DataConfig())
    ds = ProductDataset(products, image_transform=EVAL_TF, reading=ImageReading(max_pixels=5000, placeholder_size=SIZE))
    with caplog.at_level(logging.DEBUG, logger="aisle.data.dataset"):
        items = [ds[i] for i in range(len(ds))]
    masks = {it["id"]: it["image_mask"].tolist() for it in items}
    assert masks == {
        "good": [True],
        "missing": [False],
        "empty": [False],
        "trunc": [False],
        "text": [False],
        "bomb": [False],
        "symlink": [False],
    }
    for it in items:
        assert it["image"].shape == (1, 3, SIZE, SIZE)
        assert torch.isfinite(it["image"]).all()
    reasons = {}
    for record in caplog.records:
        msg = record.getMessage()
        reasons[msg.split(":")[0].removeprefix("product ")] = msg[msg.rindex("(") + 1 : msg.rindex(")")]
    assert reasons == {
        "missing": "missing",
        "empty": "empty_file",
        "trunc": "truncated",
        "text": "not_an_image",
        "bomb": "decompression_bomb",
        "symlink": "outside_data_root",
    }


def test_dataset_logs_broken_images_at_debug_level_only(broken_catalogue, caplog) -> None:
    """Runs report broken images once, up front (aisle.data.image_report); the dataset, read every epoch and in
    every worker process, must not repeat them as warnings."""
    ds = ProductDataset(load_products(broken_catalogue.csv, DataConfig()), image_transform=EVAL_TF)
    with caplog.at_level(logging.DEBUG, logger="aisle"):
        for _ in range(3):
            for i in range(len(ds)):
                ds[i]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum("product missing:" in r.getMessage() for r in caplog.records) == 3  # at DEBUG, for who looks


def test_dataloader_runs_through_broken_images(broken_catalogue) -> None:
    ds = ProductDataset(
        load_products(broken_catalogue.csv, DataConfig()),
        image_transform=EVAL_TF,
        reading=ImageReading(max_pixels=5000),
        text_transform=build_whitespace_text_transform({"t": 2}, max_length=5),
    )
    batches = list(DataLoader(ds, batch_size=4, num_workers=0))
    assert [b["image"].shape[0] for b in batches] == [4, 3]
    mask = torch.cat([b["image_mask"] for b in batches])
    assert mask.shape == (7, 1) and int(mask.sum()) == 1
    assert batches[0]["input_ids"].shape == (4, 5)
    assert batches[0]["input_ids"][0, :2].tolist() == [2, 1]  # "t good": known word, unknown word


def test_dataset_item_contract(make_catalogue) -> None:
    cat = make_catalogue([{"id": "a", "title": "Shirt"}, {"id": "b", "title": "Mug"}], images={"a.png": RED})
    products = load_products(cat.csv, DataConfig())
    ds = ProductDataset(products, label_index=np.array([3, -1]))
    item = ds[0]
    assert set(item) == {"index", "id", "label", "text"}  # no image transform: no image keys
    assert item == {"index": 0, "id": "a", "label": 3, "text": "Shirt"}
    with pytest.raises(ValueError, match="label_index"):
        ProductDataset(products, label_index=np.array([1]))


# ---------------------------------------------------------------- multi-image modes


@pytest.fixture
def multi_products(make_catalogue):
    cat = make_catalogue(
        [{"id": "p"}, {"id": "q"}, {"id": "none"}, {"id": "many"}],
        images={
            "p.png": RED,
            "p_1.png": GREEN,
            "p_2.png": BLUE,
            "q.png": RED,
            "q_1.png": "truncated",
            **{f"many_{k}.png": GREEN for k in range(1, 7)},
        },
    )
    return load_products(cat.csv, DataConfig())


def test_first_mode_takes_the_first_image(multi_products) -> None:
    ds = ProductDataset(multi_products, image_transform=EVAL_TF, reading=ImageReading("first"), train=True)
    item = ds[0]
    assert item["image"].shape == (1, 3, SIZE, SIZE)
    assert item["image_mask"].tolist() == [True]
    assert {dominant_channel(ds[0]["image"][0]) for _ in range(10)} == {0}  # always p.png (red)


def test_random_mode_picks_among_images_in_training(multi_products) -> None:
    np.random.seed(0)
    ds = ProductDataset(multi_products, image_transform=EVAL_TF, reading=ImageReading("random"), train=True)
    seen = [dominant_channel(ds[0]["image"][0]) for _ in range(40)]
    assert ds[0]["image"].shape == (1, 3, SIZE, SIZE)
    assert set(seen) == {0, 1, 2}  # all three of p's images are drawn (chance of missing one: ~3e-7)


def test_random_mode_uses_the_first_image_in_evaluation(multi_products) -> None:
    np.random.seed(0)
    ds = ProductDataset(multi_products, image_transform=EVAL_TF, reading=ImageReading("random"), train=False)
    assert {dominant_channel(ds[0]["image"][0]) for _ in range(20)} == {0}


def test_mean_pool_pads_and_masks(multi_products) -> None:
    ds = ProductDataset(multi_products, image_transform=EVAL_TF, reading=ImageReading("mean_pool", 4))
    p, q, none, many = (ds[i] for i in range(4))
    for item in (p, q, none, many):
        assert item["image"].shape == (4, 3, SIZE, SIZE)
        assert item["image_mask"].dtype == torch.bool
    assert p["image_mask"].tolist() == [True, True, True, False]
    assert [dominant_channel(p["image"][k]) for k in range(3)] == [0, 1, 2]  # index order kept
    assert torch.count_nonzero(p["image"][3]) == 0  # padding slot is zeros
    assert q["image_mask"].tolist() == [True, False, False, False]  # the truncated second image is masked
    assert none["image_mask"].tolist() == [False] * 4
    assert many["image_mask"].tolist() == [True] * 4  # six images, capped at max_images


def test_mean_pool_batches_collate(multi_products) -> None:
    ds = ProductDataset(multi_products, image_transform=EVAL_TF, reading=ImageReading("mean_pool", 2))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 2, 3, SIZE, SIZE)
    assert batch["image_mask"].tolist() == [[True, True], [True, False], [False, False], [True, True]]


# ---------------------------------------------------------------- training transform


@pytest.mark.parametrize("as_tensor", [False, True])
def test_train_transform_matches_torchvision_compose(as_tensor: bool) -> None:
    """The direct functional crop + flip draws the same boxes and flips as torchvision's composed transforms."""
    from PIL import Image
    from torchvision.transforms import v2

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (61, 83, 3), dtype=np.uint8)  # not square: crop boxes differ per draw
    image = torch.from_numpy(pixels).permute(2, 0, 1) if as_tensor else Image.fromarray(pixels)
    ref = v2.Compose(
        [v2.ToImage(), v2.RandomResizedCrop(24, scale=(0.3, 1.0), antialias=True), v2.RandomHorizontalFlip(0.5)]
    )
    ours = build_image_transform(24, train=True, crop_scale=(0.3, 1.0), normalize=False)
    outs = []
    for seed in range(12):
        torch.manual_seed(seed)
        expected = ref(image)
        torch.manual_seed(seed)
        got = ours(image)
        assert got.dtype == torch.uint8 and got.shape == (3, 24, 24)
        assert torch.equal(got, expected.as_subclass(torch.Tensor)), seed
        outs.append(got)
    assert len({o.numpy().tobytes() for o in outs}) == len(outs)  # the draws really differ
