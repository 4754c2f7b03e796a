"""Config: defaults < YAML < ``--set`` overrides; every bad value fails at load time with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aisle.config import AisleConfig, ConfigError, apply_overrides, load_config, save_config
from conftest import REPO_ROOT

CONFIG_FILES = sorted((REPO_ROOT / "configs").rglob("*.yaml"))  # recipes/ too


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_defaults_load() -> None:
    cfg = load_config()
    assert isinstance(cfg, AisleConfig)
    assert cfg.data.multi_image == "first"
    assert cfg.data.folds == 5
    assert cfg.model.fusion == "concat"
    assert cfg.train.epochs == 5
    assert cfg.train.lr.default == pytest.approx(1e-4)
    assert cfg.train.stages == []
    assert cfg.infer.tta == []


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml",
        {"name": "mine", "data": {"folds": 3, "multi_image": "mean_pool"}, "train": {"lr": {"head": 1e-3}}},
    )
    cfg = load_config(path)
    assert cfg.name == "mine"
    assert cfg.data.folds == 3
    assert cfg.data.multi_image == "mean_pool"
    assert cfg.train.lr.head == pytest.approx(1e-3)
    # untouched siblings keep their defaults
    assert cfg.data.seed == 42
    assert cfg.train.lr.default == pytest.approx(1e-4)


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == load_config()


def test_missing_yaml_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_set_overrides_win_over_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"train": {"epochs": 7, "batch_size": 8}})
    cfg = load_config(path, overrides=["train.epochs=2"])
    assert cfg.train.epochs == 2
    assert cfg.train.batch_size == 8


def test_overrides_apply_in_order() -> None:
    cfg = load_config(overrides=["train.epochs=2", "train.epochs=9"])
    assert cfg.train.epochs == 9


def test_nested_override_creates_missing_sections() -> None:
    raw = apply_overrides({}, ["train.lr.image_encoder=1.0e-5", "model.image.name=timm:test_resnet"])
    assert raw == {"train": {"lr": {"image_encoder": 1e-5}}, "model": {"image": {"name": "timm:test_resnet"}}}


def test_nested_override_keeps_sibling_keys() -> None:
    raw = apply_overrides({"train": {"lr": {"head": 0.1}, "epochs": 3}}, ["train.lr.default=0.5"])
    assert raw == {"train": {"lr": {"head": 0.1, "default": 0.5}, "epochs": 3}}


@pytest.mark.parametrize(
    ("override", "getter", "expected"),
    [
        ("train.epochs=3", lambda c: c.train.epochs, 3),
        ("train.lr.default=1e-4", lambda c: c.train.lr.default, 1e-4),  # YAML reads 1e-4 as a string
        ("train.lr.head=2.5e-3", lambda c: c.train.lr.head, 2.5e-3),
        ("model.image.pretrained=false", lambda c: c.model.image.pretrained, False),
        ("train.gradient_clip_val=null", lambda c: c.train.gradient_clip_val, None),
        ("runtime.devices=2", lambda c: c.runtime.devices, 2),
        ("runtime.devices=auto", lambda c: c.runtime.devices, "auto"),
        ("data.text_cols=[title, description]", lambda c: c.data.text_cols, ["title", "description"]),
        ("train.folds=[0,2]", lambda c: c.train.folds, [0, 2]),
        ("infer.tta=[hflip]", lambda c: c.infer.tta, ["hflip"]),
        ("data.text_prefixes={title: 'T: '}", lambda c: c.data.text_prefixes, {"title": "T: "}),
        ("data.image_sep=;", lambda c: c.data.image_sep, ";"),
        ("data.text_sep=' / '", lambda c: c.data.text_sep, " / "),
    ],
)
def test_override_values_are_parsed_and_coerced(override: str, getter, expected) -> None:
    value = getter(load_config(overrides=[override]))
    assert value == expected
    assert type(value) is type(expected)


def test_numeric_looking_value_for_a_string_field() -> None:
    assert load_config(overrides=["name=2024"]).name == "2024"


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3", "train.epochs.=3"])
def test_malformed_override_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        load_config(overrides=[bad])


@pytest.mark.parametrize("override", ["data.image_sep=,", "name=[a"])
def test_unparsable_override_value_is_a_config_error(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(overrides=[override])


def test_override_through_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'epochs' holds a value"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])
    # with the scalar only in the defaults, validation catches it and names the key
    with pytest.raises(ConfigError, match="'train.epochs'"):
        load_config(overrides=["train.epochs.x=1"])


def test_unknown_key_names_key_and_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["data.bogus=1"])
    msg = str(info.value)
    assert "data.bogus" in msg
    for valid in ("train_csv", "multi_image", "folds", "rare_classes"):
        assert valid in msg


def test_unknown_top_level_key_lists_sections() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["trian.epochs=1"])
    msg = str(info.value)
    assert "'trian'" in msg
    for section in ("data", "model", "train", "infer"):
        assert section in msg


def test_unknown_key_in_yaml_stage_lists_stage_keys(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"train": {"stages": [{"name": "s1", "epoch": 2}]}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "train.stages.0.epoch" in msg
    assert "epochs" in msg and "init_from" in msg
    assert str(path) in msg


@pytest.mark.parametrize(
    ("override", "key", "bad", "choices"),
    [
        ("model.fusion=foo", "model.fusion", "'foo'", ["concat", "sum", "gated", "late"]),
        ("data.multi_image=bogus", "data.multi_image", "'bogus'", ["first", "random", "mean_pool"]),
        ("data.rare_classes=keep", "data.rare_classes", "'keep'", ["error", "drop", "merge"]),
        ("train.scheduler=step", "train.scheduler", "'step'", ["linear", "cosine", "constant"]),
        ("model.text.pooler=max", "model.text.pooler", "'max'", ["cls", "mean"]),
    ],
)
def test_bad_choice_names_key_value_and_choices(override: str, key: str, bad: str, choices: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    msg = str(info.value)
    assert f"'{key}'" in msg
    assert bad in msg
    assert "valid choices: " + ", ".join(choices) in msg


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["train.epochs=abc"])
    msg = str(info.value)
    assert "'train.epochs'" in msg
    assert "'abc'" in msg
    assert "integer" in msg


def test_out_of_range_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="data.folds"):
        load_config(overrides=["data.folds=1"])


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["train.epochs=abc", "model.fusion=foo"])
    msg = str(info.value)
    assert "train.epochs" in msg and "model.fusion" in msg


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_stages_may_init_from_an_earlier_stage() -> None:
    cfg = load_config(overrides=["train.stages=[{name: a, freeze_encoders: true}, {name: b, init_from: a}]"])
    assert [s.name for s in cfg.train.stages] == ["a", "b"]
    assert cfg.train.stages[1].init_from == "a"
    assert cfg.train.stages[0].freeze_encoders is True


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ("[{name: a, init_from: b}, {name: b}]", "init_from='b'"),  # a later stage
        ("[{name: a}, {name: b, init_from: zz}]", "init_from='zz'"),  # no such stage
        ("[{name: a, init_from: a}]", "init_from='a'"),  # itself
        ("[{name: a}, {name: a}]", "used twice"),
    ],
)
def test_bad_stage_references_fail(stages: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[f"train.stages={stages}"])


def test_save_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            "name=rt",
            "data.text_cols=[title]",
            "data.text_prefixes={title: 'Title: '}",
            "model.fusion=gated",
            "train.lr.head=0.003",
            "train.stages=[{name: s1, epochs: 1}, {name: s2, init_from: s1}]",
            "runtime.devices=2",
            "infer.scales=[224, 288]",
        ]
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.is_file()
    text = path.read_text()
    assert "max_image_pixels" in text  # every default spelled out
    again = load_config(path)
    assert again == cfg
    assert again.train.stages[1].init_from == "s1"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_example_config_names_registered_towers(path: Path) -> None:
    from aisle.models.factory import check_tower_names

    check_tower_names(load_config(path).model)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, AisleConfig)
    assert load_config(save_config(cfg, tmp_path / "resolved.yaml")) == cfg


# ---------------------------------------------------------------- every key acts, in the section it belongs to


@pytest.mark.parametrize(
    ("overrides", "key", "valid"),
    [
        (["model.image.pooler=cls"], "model.image.pooler", "name, pretrained, train_last_n_blocks, trainable"),
        (["model.image.max_length=16"], "model.image.max_length", "name, pretrained"),
        (["model.text.name=ngram:word1-2", "model.text.pooler=cls"], "model.text.pooler", "embed_dim, max_length"),
        (["model.text.name=ngram:word1-2", "model.text.pretrained=true"], "model.text.pretrained", "embed_dim"),
        (["model.text.name=hf:bert-base-uncased", "model.text.embed_dim=64"], "model.text.embed_dim", "pooler"),
        (["model.type=dual", "model.dual.pooler=cls"], "model.dual.pooler", "max_length"),
    ],
)
def test_a_key_of_another_tower_kind_is_rejected(overrides: list[str], key: str, valid: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert f"unknown key '{key}'" in str(e.value)
    assert f"valid keys here: {valid}" in str(e.value) or all(v in str(e.value) for v in valid.split(", "))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.type=image", "model.fusion=gated"], "model.fusion='gated' applies to two-tower models"),
        (["model.type=text", "model.fusion=concat"], "remove model.fusion"),
        (["model.type=image", "model.text.name=hf:x"], "model.text is set but a model of type 'image'"),
        (["model.type=fusion", "model.dual.name=open_clip:x"], "model.dual is set"),
        (["model.image.trainable=false", "model.image.train_last_n_blocks=2"], "trainable: false freezes"),
        (["model.text.trainable=false", "model.text.train_last_n_blocks=1"], "trainable: false freezes"),
    ],
)
def test_settings_the_model_type_does_not_use_are_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=overrides)


def test_two_tower_models_default_to_concat_and_single_towers_have_no_fusion() -> None:
    assert load_config().model.fusion == "concat"
    assert load_config(overrides=["model.type=dual"]).model.fusion == "concat"
    assert load_config(overrides=["model.type=image"]).model.fusion is None
    assert load_config(overrides=["model.type=text"]).model.tower_names() == {"text": None}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("train.num_workers=0", "runtime.num_workers"),
        ("train.cache_dir=x", "runtime.cache_dir"),
        ("train.feature_cache=false", "runtime.feature_cache"),
        ("train.channels_last=false", "runtime.channels_last"),
        ("train.compile=true", "runtime.compile"),
        ("train.accelerator=cpu", "runtime.accelerator"),
        ("train.devices=1", "runtime.devices"),
        ("infer.batch_size=8", "runtime.batch_size_infer"),
    ],
)
def test_a_moved_key_names_its_new_place(tmp_path: Path, old: str, new: str) -> None:
    section, rest = old.split(".")
    key, value = rest.split("=")
    path = write_yaml(tmp_path / "old.yaml", {section: {key: yaml.safe_load(value)}})
    with pytest.raises(ConfigError, match=f"'{section}.{key}' is no longer a key: it is now {new}"):
        load_config(path)
    assert load_config(overrides=[f"{new}={value}"]).runtime is not None


@pytest.mark.parametrize("old", ["model.contrastive=true", "data.class_descriptions=x.json"])
def test_keys_that_did_nothing_are_gone_with_a_message(old: str) -> None:
    with pytest.raises(ConfigError, match=f"'{old.split('=')[0]}' is no longer a key: it did nothing"):
        load_config(overrides=[old])


def _fields(model: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, field name) for every field of the config tree, through unions and lists."""
    from aisle.config.loading import _models_in

    out = []
    for name, field in model.model_fields.items():
        out.append((f"{prefix}{name}", name))
        for sub in dict.fromkeys(_models_in(field.annotation)):
            out += _fields(sub, f"{prefix}{name}.")
    return out


def test_every_config_field_is_read_somewhere_in_src() -> None:
    """A key that is accepted must act: each field name is read as an attribute outside config.py."""
    import re

    src = REPO_ROOT / "src" / "aisle"
    code = "\n".join(p.read_text() for p in src.rglob("*.py") if p.parent.name != "config")
    sections = {name for _, name in _fields(AisleConfig) if name in AisleConfig.model_fields}
    unread = sorted(
        key
        for key, name in _fields(AisleConfig)
        if name not in sections and not re.search(rf"\.{name}\b|\"{name}\"", code)
    )
    assert unread == [], f"config keys read nowhere in src/aisle: {unread}"
