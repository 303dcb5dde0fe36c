"""The augmentation preview of a run's or fold group's recorded pipeline (clf augment-preview's library code)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clf.data.folds import is_fold_group
from clf.data.preview import plan_for_group, plan_for_run, preview_image, readable_images
from clf.errors import ClfError, one_line

from clf.report.images import jpeg_uri

PREVIEW_ROWS = 4
PREVIEW_COLUMNS = 6


@dataclass(frozen=True)
class Preview:
    source: str  # the run folder or group
    ops: str  # the recorded ops, "none" for none
    uri: str | None
    note: str | None  # why there is no picture


def augmentation_preview(folder: Path, seed: int = 0) -> Preview:
    """A grid of PREVIEW_ROWS training images, each preprocessed then augmented PREVIEW_COLUMNS times (JPEG)."""
    try:
        plan = plan_for_group(folder) if is_fold_group(folder) else plan_for_run(folder)
        ops = ", ".join(op.name for op in plan.pipeline.ops) or "none"
        paths = readable_images(plan.candidates, plan.pre, PREVIEW_ROWS)
        grid = preview_image(paths, plan.pre, plan.pipeline, PREVIEW_COLUMNS, seed)
    except ClfError as exc:
        return Preview(str(folder), "", None, f"no augmentation preview: {one_line(exc)}")
    return Preview(str(folder), ops, jpeg_uri(grid), None)
