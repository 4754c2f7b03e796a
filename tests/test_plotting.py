"""The helpers every picture shares: label placement, wrapping, PNG output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.text import Text

from aisle.evaluation.plotting import place_labels, png_bytes, pyplot, wrap_label


def test_labels_of_crowded_points_do_not_overlap() -> None:
    """Five runs almost on one spot and one far off, each labelled with a long run name."""
    rng = np.random.default_rng(0)
    xy = [(1e5 * (1 + 0.02 * rng.random()), 30 + rng.random()) for _ in range(5)] + [(4e6, 200.0)]
    labels = [f"run-{i}-with-a-rather-long-name" for i in range(len(xy))]
    fig, ax = pyplot().subplots(figsize=(6, 4))
    ax.scatter(*zip(*xy))
    ax.set_xscale("log")
    fig.tight_layout()
    texts = place_labels(ax, xy, labels)
    assert [t.get_text() for t in texts] == labels
    fig.canvas.draw()  # every label where it is drawn
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [Text.get_window_extent(t, renderer) for t in texts]  # the text, without its leader line
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    assert all(ax.bbox.contains(b.x0, b.y0) and ax.bbox.contains(b.x1, b.y1) for b in boxes)
    assert png_bytes(fig).startswith(b"\x89PNG")


@given(st.text(alphabet=st.sampled_from("ab -&:_X"), max_size=120), st.integers(4, 40))
def test_wrap_label_keeps_every_character(text: str, width: int) -> None:
    lines = wrap_label(text, width)
    assert "".join(lines) == text
    assert all(len(line) <= width for line in lines)


@pytest.mark.parametrize("text", ["", "short"])
def test_wrap_label_of_a_short_text_is_one_line(text: str) -> None:
    assert wrap_label(text, 22) == [text]
