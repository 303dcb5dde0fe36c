"""clf.export.parity: the report, the comparison (against a scripted session), and where the images come from."""

import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import CLASSES, RUN_NAME, make_data
from torch import nn

from clf.config import Preprocess
from clf.data.preprocess import preprocess
from clf.data.split import stratified_split
from clf.errors import ClfError, DataError
from clf.export.parity import (
    ParityReport,
    compare,
    folder_images,
    load_batch,
    random_batch,
    run_images,
    spread,
)

PRE = Preprocess(size=(32, 32))
REPORT = ParityReport(
    passed=True, max_abs_diff=1e-6, mean_abs_diff=1e-7, top1_agreement=1.0, atol=1e-4, images=4,
    image_source="validation images of test-run", batch_sizes=[1, 8], provider="CPUExecutionProvider",
    model="model.onnx", precision="fp32",
)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("sample"), per_class=6)


# --- the report ---------------------------------------------------------------------------------------------------


def test_reason_is_empty_when_passed():
    assert REPORT.reason() == ""


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"max_abs_diff": 0.5}, "max abs diff 0.5 > atol 0.0001"),
        ({"top1_agreement": 0.75}, "top-1 agreement 75.00% < 100%"),
        ({"max_abs_diff": 0.5, "top1_agreement": 0.5}, "max abs diff 0.5 > atol 0.0001; top-1 agreement 50.00% < 100%"),
        ({"max_abs_diff": float("nan")}, "max abs diff nan > atol 0.0001"),
    ],
)
def test_reason_names_each_failure(changes, reason):
    assert replace(REPORT, passed=False, **changes).reason() == reason


def test_write_is_plain_json(tmp_path):
    REPORT.write(tmp_path / "parity.json")
    assert json.loads((tmp_path / "parity.json").read_text()) == asdict(REPORT)
    assert [p.name for p in tmp_path.iterdir()] == ["parity.json"]


# --- compare -------------------------------------------------------------------------------------------------------


class _Input:
    name = "input"


class ScriptedSession:
    """Stands in for an onnxruntime session: returns PyTorch's logits through `change`, records the batch sizes."""

    def __init__(self, model: nn.Module, change=lambda logits, x: logits, out_classes: int | None = None):
        self.model, self.change, self.out_classes, self.batches = model, change, out_classes, []

    def get_inputs(self):
        return [_Input()]

    def run(self, outputs, feeds):
        x = feeds["input"]
        self.batches.append(len(x))
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x)).numpy()
        if self.out_classes:
            logits = logits[:, : self.out_classes]
        return [self.change(logits.copy(), x)]


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)


def test_identical_outputs_give_zero_difference(linear, batch):
    session = ScriptedSession(linear)
    max_diff, mean_diff, agreement = compare(linear, session, batch, (1, 2))
    assert max_diff < 1e-6 and mean_diff < 1e-7 and agreement == 1.0  # row-by-row vs whole-batch GEMM rounding
    assert session.batches == [1, 1, 1, 1, 1, 2, 2, 1]  # every row at every batch size, the last chunk short


def test_difference_is_measured_over_every_logit(linear, batch):
    def nudge(logits, x):
        if np.array_equal(x[-1], batch[-1]):
            logits[-1, logits[-1].argmin()] -= 0.25  # the smallest logit of the last row: the argmax stays
        return logits

    max_diff, mean_diff, agreement = compare(linear, ScriptedSession(linear, nudge), batch, (1, 5))
    assert max_diff == pytest.approx(0.25, abs=1e-6)
    assert mean_diff == pytest.approx(2 * 0.25 / (2 * 5 * 4), abs=1e-6)  # once per batch size
    assert agreement == 1.0


def test_top1_agreement_counts_rows_whose_argmax_moved(linear, batch):
    def flip_first_row(logits, x):
        if len(logits) == 5 or np.array_equal(x[0], batch[0]):  # row 0 of the batch, whatever the chunking
            logits[0] = -logits[0]
        return logits

    _, _, agreement = compare(linear, ScriptedSession(linear, flip_first_row), batch, (1, 5))
    assert agreement == pytest.approx(8 / 10)  # row 0 disagrees at batch 1 and at batch 5


def test_output_of_another_shape_is_an_error(linear, batch):
    with pytest.raises(ClfError, match=r"ONNX output shape \(5, 3\) != PyTorch \(5, 4\) at batch 2"):
        compare(linear, ScriptedSession(linear, out_classes=3), batch, (2,))


# --- where the images come from ------------------------------------------------------------------------------------


def _ckpt(data, val_split=0.25, seed=0, **config):
    return {"run_name": RUN_NAME, "config": {"data": str(data), "val_split": val_split, "seed": seed, **config}}


def _expected_val(train_dir, val_split, seed=0):
    paths = [str(p) for c in CLASSES for p in sorted((train_dir / c).iterdir(), key=str)]
    labels = [i for i, c in enumerate(CLASSES) for _ in (train_dir / c).iterdir()]
    _, val = stratified_split(labels, val_split, seed)
    return [paths[i] for i in val]


def test_run_images_are_the_runs_validation_split(train_dir):
    paths, source = run_images(_ckpt(train_dir, 0.25, seed=3), limit=32)
    assert paths == _expected_val(train_dir, 0.25, seed=3) and len(paths) == 8  # round(6 * 0.25) = 2 per class
    assert source == f"validation images of {RUN_NAME}"


def test_run_images_spread_a_limit_over_every_class(train_dir):
    paths, _ = run_images(_ckpt(train_dir, 0.5), limit=4)  # 12 validation images, 3 per class
    assert len(paths) == 4 and sorted(Path(p).parent.name for p in paths) == CLASSES


def test_run_without_validation_uses_its_training_images_and_says_so(train_dir):
    paths, source = run_images(_ckpt(train_dir, 0.0), limit=100)
    assert len(paths) == 6 * len(CLASSES)
    assert source == f"training images of {RUN_NAME} (no validation split)"


@pytest.mark.parametrize("data", ["", "does-not-exist"])
def test_run_images_are_none_when_the_data_is_gone(tmp_path, data):
    assert run_images(_ckpt(tmp_path / data if data else ""), limit=8) == ([], "")
    assert run_images({"run_name": RUN_NAME}, limit=8) == ([], "")


def test_unreadable_run_data_is_logged_not_fatal(tmp_path, caplog):
    (tmp_path / "only-one-class").mkdir()
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(_ckpt(tmp_path), limit=8) == ([], "")
    assert "cannot read the run's data for the parity check" in caplog.text


def test_spread_picks_evenly_spaced_items():
    assert spread(list("abcdefghij"), 4) == list("adgj")
    assert spread(list("abc"), 4) == list("abc")
    assert spread(list("abc"), 1) == ["a"]


def test_folder_images_are_sorted_recursive_and_spread_over_sub_folders(train_dir):
    every = folder_images(str(train_dir), limit=1000)
    assert len(every) == 24 and every == sorted(every)
    some = folder_images(str(train_dir), limit=4)
    assert some == spread(every, 4) and sorted(Path(p).parent.name for p in some) == CLASSES


def test_folder_images_of_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        folder_images(str(tmp_path / "nope"), limit=4)


def test_load_batch_is_the_shared_preprocessing(train_dir, tmp_path, caplog):
    good = sorted(str(p) for p in (train_dir / "star").iterdir())[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with caplog.at_level(logging.DEBUG, logger="clf"):
        batch = load_batch([good[0], str(broken), good[1]], PRE)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], preprocess(good[1], PRE))
    assert "skipped for the parity check" in caplog.text and str(broken) in caplog.text


def test_load_batch_of_nothing_is_empty():
    assert load_batch([], PRE).shape == (0, 3, 32, 32)


def test_random_batch_is_seeded_noise():
    a, b = random_batch(PRE, 3), random_batch(PRE, 3)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_batch(PRE, 3, seed=1))


def test_copied_images_read_the_same(train_dir, tmp_path):
    # folder_images + load_batch is what --check-images does
    shutil.copytree(train_dir / "circle", tmp_path / "imgs")
    batch = load_batch(folder_images(str(tmp_path / "imgs"), 32), PRE)
    assert batch.shape == (6, 3, 32, 32)
