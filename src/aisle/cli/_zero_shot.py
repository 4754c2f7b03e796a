"""``aisle zero-shot``: classify products by their similarity to class texts, no training (registered in
``aisle.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

__all__ = ["zero_shot"]


def zero_shot(
    model: Annotated[
        str,
        typer.Option(help="A dual encoder (open_clip:, hf-clip:, hf-siglip:) or a text tower (hf:/path/to/MiniLM)."),
    ],
    classes: Annotated[Path, typer.Option(help="JSON: a list of class names or {class: description(s)}.")],
    data: Annotated[Path, typer.Option(help="Products table, or a folder of images (ids: their paths), to classify.")],
    template: Annotated[
        list[str] | None,
        typer.Option("--template", help="Class text template, e.g. 'a photo of a {class_name}' (repeatable)."),
    ] = None,
    modality: Annotated[
        Literal["image", "text", "both"] | None,
        typer.Option(help="What of a product meets the class texts (a dual encoder: image by default)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("zero_shot"),
    temperature: Annotated[float, typer.Option(min=1e-6, help="Softmax temperature over cosines.")] = 0.07,
    image_dir: Annotated[Path | None, typer.Option(help="Image folder (default: images/ beside the table).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 64,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML whose data section reads the table.")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a data key: --set data.sep=';'")] = None,
) -> None:
    """Zero-shot: score every product against each class's texts; writes submission.csv and probabilities.csv."""
    from aisle.cli import _USER_ERRORS, _fail, _writable, console
    from aisle.config import load_config
    from aisle.progress import step

    _writable(out, "output folder (--out)")
    try:
        from aisle.inference import write_outputs
        from aisle.inference.zero_shot import zero_shot as run_zero_shot

        cfg = load_config(config, list(set_ or []))
        with step("zero-shot", None) as advance:
            pred = run_zero_shot(
                model,
                classes,
                data,
                template,
                modality,
                temperature,
                cfg.data,
                image_dir,
                batch_size,
                progress=advance,
            )
        files = write_outputs(pred, out)
    except _USER_ERRORS as e:
        _fail(e)
    console.print(f"{len(pred.ids):,} rows scored against {len(pred.label_map)} classes", markup=False)
    for name, path in files.items():
        console.print(f"wrote {name}: {path}", markup=False)
