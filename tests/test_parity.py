"""clf.export.parity: the report, the comparison (against a scripted session), and where the images come from
(split.json, confined to its data root; --check-images)."""

import json
import logging
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import CLASSES, RUN_NAME, make_data, write_split
from torch import nn

from clf.config import Preprocess
from clf.data.preprocess import preprocess
from clf.data.split import stratified_split
from clf.errors import ClfError, DataError
from clf.export import parity as parity_module
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


def test_nan_outputs_agree_with_nothing(linear, batch):
    """issue 24: argmax of an all-NaN row is 0 in both runtimes; that was reported as 100 % agreement."""
    nan_model = nn.Sequential(linear, _AllNan()).eval()
    max_diff, _, agreement = compare(nan_model, ScriptedSession(nan_model), batch, (1, 2))
    assert np.isnan(max_diff) and agreement == 0.0

    def one_nan_row(logits, x):
        logits[0, 1] = np.nan
        return logits

    _, _, agreement = compare(linear, ScriptedSession(linear, one_nan_row), batch, (5,))
    assert agreement == pytest.approx(4 / 5)
    report = replace(REPORT, passed=False, max_abs_diff=float("nan"), top1_agreement=0.0)
    assert report.reason() == "max abs diff nan > atol 0.0001; top-1 agreement 0.00% < 100%"


def test_a_nan_proof_is_strict_json(tmp_path):
    replace(REPORT, passed=False, max_abs_diff=float("nan"), mean_abs_diff=float("inf")).write(tmp_path / "p.json")
    text = (tmp_path / "p.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the proof"))
    assert data["max_abs_diff"] is None and data["mean_abs_diff"] is None


class _AllNan(nn.Module):
    def forward(self, x):
        return x * float("nan")


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


def _split(folder, train_dir, val_split=0.25, seed=0, **changes):
    write_split(folder, train_dir, val_split, seed, **changes)
    return folder


def _expected_val(train_dir, val_split, seed=0):
    paths = [str(p) for c in CLASSES for p in sorted((train_dir / c).iterdir(), key=str)]
    labels = [i for i, c in enumerate(CLASSES) for _ in (train_dir / c).iterdir()]
    _, val = stratified_split(labels, val_split, seed)
    return [paths[i] for i in val]


def test_run_images_are_the_validation_list_of_split_json(train_dir, tmp_path):
    paths, source = run_images(_split(tmp_path, train_dir, 0.25, seed=3), RUN_NAME, limit=32)
    assert paths == _expected_val(train_dir, 0.25, seed=3) and len(paths) == 8  # round(6 * 0.25) = 2 per class
    assert source == f"validation images of {RUN_NAME}"


def test_run_images_spread_a_limit_over_every_class(train_dir, tmp_path):
    paths, _ = run_images(_split(tmp_path, train_dir, 0.5), RUN_NAME, limit=4)  # 12 validation images, 3 per class
    assert len(paths) == 4 and sorted(Path(p).parent.name for p in paths) == CLASSES


def test_run_without_validation_uses_its_training_images_and_says_so(train_dir, tmp_path):
    paths, source = run_images(_split(tmp_path, train_dir, 0.0), RUN_NAME, limit=100)
    assert len(paths) == 6 * len(CLASSES)
    assert source == f"training images of {RUN_NAME} (no validation split)"


def test_no_split_json_means_no_run_images(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(tmp_path, RUN_NAME, limit=8) == ([], "")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # a v0.1 run or a bare checkpoint: not a warning


def test_images_whose_data_is_gone_are_none(train_dir, tmp_path, caplog):
    _split(tmp_path, train_dir, root=str(tmp_path / "gone"))
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(tmp_path, RUN_NAME, limit=8) == ([], "")
    split = tmp_path / "split.json"
    assert f"{split}: 8 of 8 entries skipped for the parity check (8 missing)" in caplog.messages


def _hostile(tmp_path, train_dir):
    """A split.json whose root is a copy of the data, and entries pointing everywhere but at its images."""
    root = tmp_path / "data"
    shutil.copytree(train_dir, root)
    outside = tmp_path / "outside.png"
    shutil.copy(sorted((train_dir / "star").iterdir())[0], outside)
    good = sorted(p.relative_to(root).as_posix() for p in (root / "star").iterdir())[:2]
    val = [*good, "../../etc/passwd", "../outside.png", "/etc/passwd", str(outside), "circle/fifo.png",
           "circle/out.png", "circle/passwd.png", "circle/zero.png", "circle/notes.png", 42, "", "circle"]
    write_split(tmp_path / "run", root, val=val)
    os.mkfifo(root / "circle" / "fifo.png")
    (root / "circle" / "out.png").symlink_to(outside)
    (root / "circle" / "passwd.png").symlink_to("/etc/passwd")
    (root / "circle" / "zero.png").symlink_to("/dev/zero")
    (root / "notes.txt").write_text("a text file of the user's, inside the root")
    (root / "circle" / "notes.png").symlink_to(root / "notes.txt")
    return root, good


def test_only_regular_image_files_under_the_root_are_used(train_dir, tmp_path, caplog):
    root, good = _hostile(tmp_path, train_dir)
    with caplog.at_level(logging.DEBUG, logger="clf"):
        paths, _ = run_images(tmp_path / "run", RUN_NAME, limit=32)
    assert paths == [str(root / name) for name in good]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        (f"{tmp_path / 'run' / 'split.json'}: 12 of 14 entries skipped for the parity check (1 a link to a non-image "
         "name, 1 not a regular file, 4 not a relative path, 2 not an image name, 4 outside the data root)")
    ]


def test_hostile_entries_are_never_opened(train_dir, tmp_path, monkeypatch):
    root, good = _hostile(tmp_path, train_dir)
    opened = []
    monkeypatch.setattr(parity_module, "preprocess", lambda path, pre: opened.append(path) or np.zeros((3, 32, 32)))
    paths, _ = run_images(tmp_path / "run", RUN_NAME, limit=32)
    load_batch(paths, PRE)
    assert opened == [str(root / name) for name in good]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"root": "/x", "val": []}', "no format number"),
        ('{"format": 2, "root": "/x", "val": []}', "format 2 is newer than this clf reads (1); upgrade clf"),
        ('{"format": 1, "root": "relative", "val": []}', "its root is not an absolute path"),
        ('{"format": 1, "root": "/x", "val": "a.png"}', "val and train must be lists of paths"),
    ],
)
def test_an_unusable_split_json_is_one_warning(tmp_path, content, problem, caplog):
    (tmp_path / "split.json").write_text(content)
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(tmp_path, RUN_NAME, limit=8) == ([], "")
    assert caplog.messages == [f"{tmp_path / 'split.json'}: {problem}; not used for the parity check"]


def test_a_split_json_that_is_a_fifo_or_a_device_is_never_read(tmp_path, caplog):
    os.mkfifo(tmp_path / "split.json")  # opening it for reading would wait for a writer forever
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "split.json").symlink_to("/dev/zero")  # reading it would never end
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(tmp_path, RUN_NAME, limit=8) == ([], "")
        assert run_images(tmp_path / "dev", RUN_NAME, limit=8) == ([], "")
    assert caplog.messages == [
        f"{tmp_path / 'split.json'}: cannot read it (not a regular file); not used for the parity check",
        f"{tmp_path / 'dev' / 'split.json'}: cannot read it (not a regular file); not used for the parity check",
    ]


def test_a_split_json_linked_to_a_text_file_never_shows_its_contents(tmp_path, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "split.json").symlink_to(secret)
    with caplog.at_level(logging.DEBUG, logger="clf"):
        assert run_images(tmp_path / "run", RUN_NAME, limit=8) == ([], "")
    assert "root:x" not in caplog.text and "not valid JSON" in caplog.text


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
