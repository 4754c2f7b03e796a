"""Training augmentation policies (``data.augment``): one registry, each policy runs, seeds fix the draws."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image

from aisle.config import ConfigError, DataConfig, load_config
from aisle.config.data_schema import AugmentPolicy
from aisle.data.transforms import AUGMENT_POLICIES, build_image_transform

SIZE = 24


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (61, 83, 3), dtype=np.uint8))  # not square: crops differ


def _draw(policy: str, image: Image.Image, seed: int, **kw) -> torch.Tensor:
    torch.manual_seed(seed)
    return build_image_transform(SIZE, train=True, normalize=False, augment=policy, **kw)(image)


def test_the_config_choices_are_the_registry() -> None:
    assert sorted(get_args(AugmentPolicy)) == AUGMENT_POLICIES.list()
    assert DataConfig().augment == "minimal"


@pytest.mark.parametrize("policy", AUGMENT_POLICIES.list())
def test_each_policy_builds_and_runs_on_a_pil_image(policy: str, image: Image.Image) -> None:
    raw = _draw(policy, image, 0)
    assert raw.dtype == torch.uint8 and tuple(raw.shape) == (3, SIZE, SIZE)
    torch.manual_seed(0)
    norm = build_image_transform(SIZE, train=True, augment=policy)(image)
    assert norm.dtype == torch.float32 and tuple(norm.shape) == (3, SIZE, SIZE) and torch.isfinite(norm).all()


def test_none_is_deterministic_and_what_evaluation_sees(image: Image.Image) -> None:
    outs = {_draw("none", image, seed).numpy().tobytes() for seed in range(5)}
    assert len(outs) == 1
    evaluation = build_image_transform(SIZE, train=False, normalize=False)(image)
    assert torch.equal(_draw("none", image, 0), evaluation.as_subclass(torch.Tensor))


@pytest.mark.parametrize("policy", ["minimal", "standard", "strong"])
def test_random_policies_repeat_under_a_seed_and_vary_across_seeds(policy: str, image: Image.Image) -> None:
    assert torch.equal(_draw(policy, image, 7), _draw(policy, image, 7))
    assert len({_draw(policy, image, seed).numpy().tobytes() for seed in range(6)}) == 6


def test_minimal_is_the_default_training_transform(image: Image.Image) -> None:
    """The default policy keeps the earlier training transform (which ``test_images`` checks against torchvision's
    RandomResizedCrop + RandomHorizontalFlip)."""
    default = build_image_transform(SIZE, train=True, normalize=False)
    for seed in range(4):
        expected = _draw("minimal", image, seed)
        torch.manual_seed(seed)
        assert torch.equal(default(image), expected)


def test_standard_jitters_colour_on_the_minimal_crop(image: Image.Image) -> None:
    """Same seed: the same crop (drawn first), then colours change, so pixels differ but not by a new crop."""
    for seed in range(4):
        a, b = _draw("minimal", image, seed).float(), _draw("standard", image, seed).float()
        assert not torch.equal(a, b)
        # a colour change keeps the picture: it correlates with its own crop, not with another seed's crop
        other = _draw("minimal", image, seed + 100).float()
        assert _corr(a, b) > 0.9 > _corr(a, other)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_strong_adds_blur_and_jpeg_each_about_one_time_in_five(image: Image.Image) -> None:
    """Same seed: ``strong`` draws ``standard``'s ops first, then its two extras; where neither fires (p 0.8 x 0.8)
    the output is ``standard``'s."""
    seeds = range(200)
    same = [torch.equal(_draw("standard", image, s), _draw("strong", image, s)) for s in seeds]
    assert 0.54 < np.mean(same) < 0.74, np.mean(same)  # 0.64 expected


def test_crop_scale_sets_the_crop_area(image: Image.Image) -> None:
    """A scale of (1, 1) keeps the whole (square) picture: the output is the resized image or its mirror."""
    square = image.crop((0, 0, 61, 61))
    whole = torch.from_numpy(np.array(square.resize((SIZE, SIZE), Image.BILINEAR))).permute(2, 0, 1).float()
    for seed in range(4):
        out = _draw("minimal", square, seed, crop_scale=(1.0, 1.0)).float()
        assert min((out - whole).abs().mean(), (out - whole.flip(-1)).abs().mean()) < 2.0
        assert (_draw("minimal", square, seed, crop_scale=(0.1, 0.1)).float() - whole).abs().mean() > 10


def test_an_unknown_policy_fails_at_config_load_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["data.augment=heavy"])
    assert "data.augment" in str(err.value) and "heavy" in str(err.value)
    assert all(name in str(err.value) for name in AUGMENT_POLICIES.list())
    with pytest.raises(ValueError, match="valid choices: minimal, none, standard, strong"):
        build_image_transform(SIZE, train=True, augment="heavy")


@pytest.mark.parametrize("bad", ["[0.0, 1.0]", "[0.9, 0.5]", "[0.5, 1.5]"])
def test_a_crop_scale_that_is_not_an_area_range_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(overrides=[f"data.crop_scale={bad}"])


def test_loaders_train_with_the_configured_policy(tmp_path) -> None:
    """``data.augment`` / ``data.crop_scale`` reach the training loader; evaluation loaders never augment."""
    from aisle.data.demo import write_demo_catalogue
    from aisle.data.loaders import LoaderOptions, build_loader
    from aisle.data.products import load_products
    from aisle.models import ImagePreprocess

    write_demo_catalogue(tmp_path / "cat", n_train=12, n_test=2, seed=3, image_size=40)
    products = load_products(tmp_path / "cat" / "train.csv", DataConfig())
    pre = ImagePreprocess(SIZE, (0.5,) * 3, (0.5,) * 3, "bilinear")

    def batch(data: DataConfig, train: bool) -> torch.Tensor:
        opts = LoaderOptions.create(data, batch_size=12, num_workers=0)
        assert (opts.augment, opts.crop_scale) == (data.augment, data.crop_scale)
        loader = build_loader(products, None, opts, train=train, preprocess=pre)
        torch.manual_seed(0)
        got = next(iter(loader))
        return got["image"][np.argsort(got["id"])]  # (B, K, 3, H, W) in id order: training shuffles

    evaluation = batch(DataConfig(augment="strong"), train=False)
    assert torch.equal(batch(DataConfig(augment="none"), train=True), evaluation)
    assert not torch.equal(batch(DataConfig(augment="minimal"), train=True), evaluation)
