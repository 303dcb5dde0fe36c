"""The distillation fields of TrainConfig: `clf distill TEACHER DATA` trains an ordinary run whose loss follows a
teacher's soft predictions (clf/train/distillation.py, clf/distill/).

Declared here, mixed into TrainConfig, so that a distilled run is an ordinary run (resume, curves, checkpoints,
export) whose config.json and checkpoints record the teacher. The options are `clf distill`'s only
(command="distill"): `clf train` does not list them.
"""

from __future__ import annotations

from dataclasses import dataclass

from clf.config.base import setting

DISTILL = "distill"  # the command whose options these are
DEFAULT_KD_VIEWS = 4  # views cached per image with augmentation on (benchmarks/distill.py measures the cost)


@dataclass(frozen=True)
class DistillFields:
    """What a distilled run records about its teacher and its loss (None / defaults: an ordinary run)."""

    # The TEACHER argument (an .onnx clf wrote, a run folder or a fold group); the file may move between sittings,
    # its content may not: teacher_sha256 is checked on resume.
    teacher: str | None = setting(None, resumable=True)
    teacher_sha256: str | None = None
    kd_temperature: float = setting(4.0, "Distillation temperature T: the student matches the teacher's "
                                         "probabilities softened by T (loss KL * T^2).", command=DISTILL)
    kd_alpha: float = setting(0.5, "Weight of the hard-label cross-entropy on labelled images, added to the "
                                   "distillation term (0: the teacher alone).", command=DISTILL)
    # None: DEFAULT_KD_VIEWS with augmentation on, 1 without (resolved by clf.train.distillation)
    kd_views: int | None = setting(None, "Augmented views per image the teacher predicts once (view 0: the image "
                                         "itself); epoch e trains on view e mod K, the image the teacher saw. "
                                         f"[default: {DEFAULT_KD_VIEWS} with augmentation, 1 without]",
                                   show_default=False, command=DISTILL)
    unlabelled: str | None = setting(None, "Unlabelled images (e.g. the test folder) trained on the teacher's "
                                           "predictions alone; never DATA or a folder inside or around it. Check "
                                           "your competition's rules first.", resumable=True, command=DISTILL)

    def _distill_checks(self) -> tuple[tuple[bool, str], ...]:
        views, temperature, alpha = self.kd_views, self.kd_temperature, self.kd_alpha
        distilling = self.teacher is not None
        mixing = getattr(self, "mixup", 0) > 0 or getattr(self, "cutmix", 0) > 0
        return (
            (temperature > 0, f"--kd-temperature must be > 0 (e.g. 4), got {temperature:g}"),
            (alpha >= 0, f"--kd-alpha must be >= 0 (0: the teacher alone), got {alpha:g}"),
            (views is None or views >= 1, f"--kd-views must be >= 1, got {views}"),
            (self.unlabelled is None or distilling, "--unlabelled images train on a teacher's predictions: use "
                                                    "`clf distill TEACHER DATA --unlabelled DIR`"),
            (self.unlabelled is None or self.unlabelled.strip() != "", "--unlabelled is empty; give the folder of "
                                                                       "unlabelled images or leave it out"),
            (not distilling or not mixing, "--mixup/--cutmix blend two images, but the teacher predicted each image "
                                           "alone; leave them out of `clf distill`"),
            (not distilling or getattr(self, "task", "") != "multilabel",
             "`clf distill` trains single-label students; leave out --task multilabel"),
            (not distilling or getattr(self, "pseudo_labels", None) is None,
             "`clf distill` takes the teacher's soft targets directly: use --unlabelled DIR instead of "
             "--pseudo-labels"),
            (not distilling or getattr(self, "folds", None) is None,
             "`clf distill` trains one student; leave out --folds (distill from the fold group instead: "
             "`clf distill runs/GROUP DATA`)"),
            (not distilling or not getattr(self, "refit", False),
             "`clf distill` does not take --refit yet; train the student with --no-val --epochs N instead"),
        )
