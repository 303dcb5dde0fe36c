"""The configuration of `clf report`: what to read (runs, fold groups, a model with labelled images) and what to write.

Each field with a help line is an option of the command (clf/cli/options.py); `paths` is its PATH arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clf.choices import DEVICES
from clf.config.base import JsonMixin, check_choice, raise_first_failure, setting
from clf.config.serving import LabelsCsvFields

MAX_GALLERY_IMAGES = 1000  # a gallery beyond this is no longer looked at, and the file would grow past a few MB
DEFAULT_GALLERY_IMAGES = 48


@dataclass(frozen=True)
class _ReportInputs(JsonMixin):
    """What `clf report` reads and writes: declared before LabelsCsvFields so that --help lists --images first."""

    paths: tuple[str, ...] = ()  # the PATH arguments: run folders, fold groups, folders of runs, an .onnx
    output: str = setting("report.html", "The HTML file to write (one self-contained file).", flags=("--output", "-o"),
                          cli_type=Path)
    images: str | None = setting(None, "Labelled images (class folders, or a folder with --labels-csv; a "
                                       "multi-label model needs --labels-csv) to evaluate the one model PATH on "
                                       "(a run folder or an .onnx): per-class scores, mistakes, confusion or "
                                       "thresholds, reliability.", cli_type=Path)


@dataclass(frozen=True)
class ReportConfig(LabelsCsvFields, _ReportInputs):
    """What `clf report` needs: the PATHs, the HTML file to write, and the labelled images to evaluate a model on
    (class folders, or a folder with --labels-csv: a multi-label model's images are tagged by it)."""

    max_images: int = setting(DEFAULT_GALLERY_IMAGES, f"Mistakes shown in the gallery, worst first "
                                                      f"(1..{MAX_GALLERY_IMAGES}).")
    device: str = setting("cpu", "Where onnxruntime runs the model for the evaluation (Grad-CAM runs on the CPU).",
                          choices=DEVICES)

    def __post_init__(self) -> None:
        raise_first_failure((
            (bool(self.paths), "clf report needs a PATH: a run folder, a fold group, a folder of runs or an .onnx"),
            (1 <= self.max_images <= MAX_GALLERY_IMAGES,
             f"--max-images must be 1..{MAX_GALLERY_IMAGES}, got {self.max_images}"),
            check_choice("--device", self.device, DEVICES),
            (self.labels_csv is None or self.images is not None,
             "--labels-csv labels the images of --images; add --images DIR or leave out --labels-csv"),
            *self.labels_csv_checks(),
        ))
