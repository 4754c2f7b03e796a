"""Headless matplotlib, set up in one place for every picture aisle writes, and the helpers the pictures share."""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation

__all__ = ["place_labels", "png_bytes", "png_data_uri", "pyplot", "save_png", "wrap_label"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed); imported lazily, it is slow to import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, cropped or grown to what it draws (a legend or label outside the axes is kept
    whole); the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    finally:
        pyplot().close(fig)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG file; the figure is closed."""
    Path(path).write_bytes(png_bytes(fig, dpi))
    return Path(path)


def png_data_uri(fig: Figure, dpi: int = 110) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (for a self-contained HTML page); the figure is closed."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode()


def wrap_label(text: str, width: int = 22) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters, at spaces where it can, inside a long word
    (an id) where it must. Nothing is dropped: ``"".join(lines) == text`` (a space that ends a line stays on it).
    """
    return textwrap.wrap(text, width, drop_whitespace=False, break_on_hyphens=False) or [text]


def place_labels(
    ax: Axes,
    xy: Sequence[tuple[float, float]],
    labels: Sequence[str],
    fontsize: float = 7,
    step: float = 9,
    marker_radius: float = 4,
) -> list[Annotation]:
    """Annotate each data point with its label so that no two labels overlap, no label covers a point's marker
    (``marker_radius`` points around it) and each stays inside the axes.

    Each label tries the four corners around its point, then the same corners moved further up or down in steps
    of ``step`` points (with a thin line back to its point). Call it after the figure's layout is final
    (``tight_layout``): the boxes are measured in display space.

    Returns:
        The annotations, in the order of ``labels``.
    """
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.get_figure()
    if fig is None:
        raise ValueError("the axes belong to no figure")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg canvases have one
    frame = ax.bbox  # inside the axes: clear of a colour bar or a neighbouring panel
    r = marker_radius * fig.dpi / 72
    placed = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in ax.transData.transform(xy)]
    out: dict[int, Annotation] = {}
    corners = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    # points from the top down: a label pushed further out lands beside the points not yet placed
    order = sorted(range(len(labels)), key=lambda i: -ax.transData.transform(xy[i])[1])
    for i in order:
        for ring in range(40):
            candidates = [(sx * 5, sy * (3 + ring * step)) for sx, sy in corners]
            for dx, dy in candidates:
                ann = ax.annotate(
                    labels[i],
                    xy[i],
                    xytext=(dx, dy),
                    textcoords="offset points",
                    fontsize=fontsize,
                    ha="left" if dx > 0 else "right",
                    va="bottom" if dy > 0 else "top",
                    arrowprops=_leader(dx, dy) if ring else None,
                )
                ann.update_positions(renderer)  # where it lands (else measured before it is placed)
                box = Text.get_window_extent(ann, renderer)  # the text alone, not its line back to the point
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(b) for b in placed):
                    placed.append(box)
                    out[i] = ann
                    break
                ann.remove()
            if i in out:
                break
        else:  # no free place within reach (a crowded plot): the first corner, overlapping rather than absent
            out[i] = ax.annotate(labels[i], xy[i], xytext=(5, 3), textcoords="offset points", fontsize=fontsize)
    return [out[i] for i in range(len(labels))]


def _leader(dx: float, dy: float) -> dict:
    """A thin line from the label's corner nearest its point to just short of the point's marker."""
    corner = (0.0 if dx > 0 else 1.0, 0.0 if dy > 0 else 1.0)
    return {"arrowstyle": "-", "color": "#999", "lw": 0.5, "relpos": corner, "shrinkB": 4}
