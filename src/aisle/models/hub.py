"""Pretrained weights from the Hugging Face hub: which towers need it, and whether it can be reached (asked once).

Without this check a machine with no internet spends about a minute in the download libraries' retries and then
fails with a message that names neither the tower nor the fix. Here the hub is probed once per process (a TCP
connect with a short timeout); when it cannot be reached, Hugging Face offline mode is switched on for the rest
of the process (weights already in the local cache then load without retries), and a tower whose weights are
neither in a folder nor in the cache is refused before any data is read or run folder written.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
from huggingface_hub import constants, try_to_load_from_cache

from aisle.models.dual import TINY_PRESET

__all__ = ["HubSource", "hub_reachable", "hub_source", "require_hub_weights"]

PROBE_TIMEOUT_S = 3.0

# files whose presence in the local cache means the weights are there (per library)
_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_FILES = ("config.json",)


@dataclass(frozen=True)
class HubSource:
    """Where a tower's weights come from: a hub repository (checked in the local cache by ``files``) or a URL."""

    repo: str | None
    files: tuple[str, ...] = ()
    url: str | None = None

    def cached(self) -> bool:
        if self.repo is not None:
            return any(isinstance(try_to_load_from_cache(self.repo, f), str) for f in self.files)
        if self.url is not None:  # timm/open_clip weights by URL land in torch hub's checkpoints folder
            import torch

            return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.url).path).name).is_file()
        return False

    def describe(self) -> str:
        return f"the Hugging Face hub ({self.repo})" if self.repo is not None else f"{self.url}"


def _timm_source(model: str, pretrained: bool) -> HubSource | None:
    import timm

    source, name = timm.models.parse_model_name(model)
    if not pretrained or source == "local-dir":
        return None
    if source == "hf-hub":
        return HubSource(name.partition("@")[0], _TIMM_FILES + _OPEN_CLIP_FILES)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        return HubSource(cfg.hf_hub_id, _TIMM_FILES)
    url = cfg.url[0] if isinstance(cfg.url, tuple) else cfg.url
    return HubSource(None, url=url) if url else None


def _open_clip_source(model: str, pretrained: bool) -> HubSource | None:
    import open_clip

    arch, _, tag = model.partition("/")
    if arch == TINY_PRESET or not pretrained or not tag:
        return None
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("hf_hub"):
        return HubSource(str(cfg["hf_hub"]).rstrip("/"), _OPEN_CLIP_FILES)
    return HubSource(None, url=cfg["url"]) if cfg.get("url") else None


def _transformers_source(model: str) -> HubSource | None:
    # config and tokenizer come from the hub even without pretrained weights
    if model == TINY_PRESET or Path(model).expanduser().is_dir():
        return None
    return HubSource(model, _HF_FILES)


def hub_source(prefix: str, model: str, pretrained: bool) -> HubSource | None:
    """Where the tower ``prefix:model`` downloads from, or None when it needs nothing from the network."""
    if prefix == "timm":
        return _timm_source(model, pretrained)
    if prefix == "open_clip":
        return _open_clip_source(model, pretrained)
    if prefix in ("hf", "hf-clip", "hf-siglip", "hf-blip"):
        return _transformers_source(model)
    return None  # tiny:, ngram:, tfidf: are built here


def _probe(endpoint: str, timeout: float) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub answers a TCP connect (asked once per process). When it does not, Hugging Face offline
    mode is switched on so that cached weights load at once instead of after the download retries.
    """
    if huggingface_hub.is_offline_mode():
        return False
    if _probe(constants.ENDPOINT, PROBE_TIMEOUT_S):
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    return False


def require_hub_weights(key: str, spec: str, source: HubSource | None) -> None:
    """Raise ``ValueError`` when the tower ``spec`` (config key ``key``) needs a download that cannot happen."""
    if source is None or source.cached() or hub_reachable():
        return
    prefix = spec.partition(":")[0]
    local = {
        "timm": "timm:local-dir:/path/to/folder (config.json + model.safetensors)",
        "open_clip": "hf-clip:/path/to/folder for a transformers CLIP saved with save_pretrained, or copy a "
        "Hugging Face cache (HF_HOME) that holds the weights onto this machine",
    }.get(prefix, f"{prefix}:/path/to/folder (what save_pretrained wrote)")
    raise ValueError(
        f"{key}: {spec} needs files from {source.describe()}, which this machine cannot reach "
        f"({constants.ENDPOINT} did not answer within {PROBE_TIMEOUT_S:.0f} s, or HF_HUB_OFFLINE is set), and they "
        f"are not in the local cache. Copy the model to a folder and name it: {local}; or set pretrained: false"
    )
