"""The distillation loss against numbers worked out by hand, the views the teacher and the student share, and the
cached teacher targets (clf.train.distillation, clf.data.views)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clf.config import Preprocess, TrainConfig
from clf.data.augment_presets import build_pipeline, resolve_knobs
from clf.data.views import augmented_view, view_seed
from clf.errors import ClfError
from clf.tasks import SINGLE_LABEL
from clf.train.distillation import distill_criterion, kd_loss
from clf.train.kd_data import UNLABELLED, TeacherTargets, ViewDataset, read_teacher_targets, write_teacher_targets
from clf.train.losses import build_criterion

LN2, LN3 = math.log(2), math.log(3)


def plain_ce(logits, labels):
    return F.cross_entropy(logits, labels)


def test_kd_loss_equals_the_hand_computation():
    """T = 2, alpha = 0.5, two classes.

    Row 0, label 0: teacher [0.8, 0.2] -> sqrt and renormalise -> [2/3, 1/3]; student logits [2 ln 2, 0] / 2 ->
    softmax [2/3, 1/3]: KL 0. Cross-entropy of [2 ln 2, 0] on class 0: -ln(4/5) = 0.22314355.
    Row 1, unlabelled: teacher [0.5, 0.5] stays; student [2 ln 3, 0] / 2 -> [3/4, 1/4]:
    KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3) = 0.14384104.
    Loss = T^2 * (0 + 0.14384104) / 2 + 0.5 * 0.22314355 = 0.28768207 + 0.11157178 = 0.39925385.
    """
    logits = torch.tensor([[2 * LN2, 0.0], [2 * LN3, 0.0]])
    teacher = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    labels = torch.tensor([0, UNLABELLED])
    loss = kd_loss(logits, teacher, labels, temperature=2.0, alpha=0.5, hard=plain_ce)
    assert float(loss) == pytest.approx(0.39925385, abs=1e-6)
    # alpha 0: the teacher alone; the same rows through a run's criterion on [B, C + 1] targets
    assert float(kd_loss(logits, teacher, labels, 2.0, 0.0, plain_ce)) == pytest.approx(0.28768207, abs=1e-6)
    cfg = TrainConfig(teacher="t.onnx", kd_temperature=2.0, kd_alpha=0.5, label_smoothing=0.0)
    criterion = distill_criterion(build_criterion(SINGLE_LABEL, 2, 0.0), cfg)
    target = torch.cat([teacher, labels[:, None].float()], dim=1)
    assert float(criterion(logits, target)) == pytest.approx(0.39925385, abs=1e-6)
    # validation's class labels [B] still get the run's own loss
    assert float(criterion(logits, torch.tensor([0, 0]))) == pytest.approx(
        (-math.log(0.8) - math.log(0.9)) / 2, abs=1e-6)


def test_kd_loss_is_zero_when_the_student_matches_the_teacher_and_no_row_is_labelled():
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    logits = torch.log(teacher) * 1.0  # T = 1: the same distribution
    assert float(kd_loss(logits, teacher, torch.tensor([UNLABELLED]), 1.0, 0.5, plain_ce)) == pytest.approx(0,
                                                                                                           abs=1e-6)


def test_a_teacher_probability_of_zero_gives_a_finite_loss():
    loss = kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 4.0, 0.5, plain_ce)
    assert math.isfinite(float(loss))


def test_views_are_deterministic_per_seed_image_and_view_and_view_0_is_the_image():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    augment = build_pipeline(resolve_knobs("strong", {}))
    assert augmented_view(image, augment, 0, "a/x.png", 0) is image
    first = augmented_view(image, augment, 0, "a/x.png", 1)
    assert np.array_equal(first, augmented_view(image.copy(), augment, 0, "a/x.png", 1))
    assert not np.array_equal(first, augmented_view(image, augment, 0, "a/x.png", 2))
    assert len({view_seed(0, "a/x.png", 1), view_seed(1, "a/x.png", 1), view_seed(0, "a/y.png", 1)}) == 3


def test_the_view_dataset_yields_view_e_mod_k_with_its_targets(tmp_path):
    import cv2

    paths = []
    for index in range(2):
        path = tmp_path / f"{index}.png"
        cv2.imwrite(str(path), np.random.default_rng(index).integers(0, 256, (20, 20, 3), dtype=np.uint8))
        paths.append(str(path))
    probs = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    targets = TeacherTargets(paths, ["0.png", "1.png"], probs, np.array([1, UNLABELLED]))
    augment = build_pipeline(resolve_knobs("strong", {}))
    pre = Preprocess(size=(16, 16))
    data = ViewDataset(targets, pre, augment, seed=5)
    from clf.data.preprocess import load_resized, normalize

    for epoch, view in ((1, 0), (2, 1), (3, 2), (4, 0)):
        data.set_epoch(epoch)
        image, target = data[1]
        expected = augmented_view(load_resized(paths[1], pre), augment, 5, "1.png", view)
        assert np.array_equal(image.numpy(), normalize(expected, pre))
        assert target.tolist() == [*probs[1, view].tolist(), float(UNLABELLED)]
    write_teacher_targets(tmp_path, targets, {"views": 3})
    read, meta = read_teacher_targets(tmp_path / "teacher_targets.npz")
    assert read.keys == targets.keys and np.array_equal(read.probs, probs) and meta == {"views": 3}
    assert read.unlabelled == 1


@pytest.mark.parametrize(("options", "message"), [
    ({"kd_temperature": 0.0}, "--kd-temperature must be > 0"),
    ({"kd_alpha": -1.0}, "--kd-alpha must be >= 0"),
    ({"kd_views": 0}, "--kd-views must be >= 1"),
    ({"mixup": 0.2}, "--mixup/--cutmix"),
    ({"folds": 3}, "leave out --folds"),
])
def test_distillation_settings_are_checked(options, message):
    with pytest.raises(ClfError, match=message):
        TrainConfig(teacher="t.onnx", **options)


def test_a_folder_teacher_whose_runs_have_different_classes_is_refused(tmp_path, monkeypatch):
    from clf.distill import teacher
    from clf.errors import DataError

    classes = {"a": ["cat", "dog"], "b": ["cat", "fox"]}
    for name in classes:
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"stand-in")
    monkeypatch.setattr("clf.models.checkpoint_load.load_checkpoint",
                        lambda path: {"classes": classes[path.parent.name]})
    with pytest.raises(DataError) as refused:
        teacher.folder_teacher_classes(tmp_path)
    assert str(refused.value) == (f"{tmp_path}: its runs have different classes ({tmp_path / 'a' / 'best.pt'}: cat, "
                                  f"dog; {tmp_path / 'b' / 'best.pt'}: cat, fox); give one run or a fold group of one "
                                  "data set")
    classes["b"] = ["cat", "dog"]
    assert teacher.folder_teacher_classes(tmp_path) == ["cat", "dog"]
