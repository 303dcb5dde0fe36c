"""`clf train --folds K` end to end: the group folder, oof.csv against each fold model, resume, CSV labels, `clf runs`,
and the folds under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import tree_digest
from cli_helpers import clf, error_line
from train_helpers import assert_same_weights, interrupt_in_epoch, load, make_data, train

from clf.data.folds import read_group, read_oof
from clf.data.preprocess import preprocess
from clf.models.checkpoint_load import load_checkpoint, model_from_checkpoint, preprocess_from_checkpoint
from clf.ownership import read_marker
from clf.probabilities import log_loss
from clf.train.history import read_history_csv

# As train_helpers.TINY, on the command line: a fold run here trains exactly as `train(..., fold=k)` does.
TINY_CLI = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
            "--lr", "0.003", "--seed", "0", "--ema", "0"]
RESUME = ["--workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("folds_data"), n_per_class=6)  # 4 classes x 6: 8 images a fold


@pytest.fixture(scope="module")
def group(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folds_runs")
    result = clf("train", data, *TINY_CLI, "--epochs", "1", "--folds", "3", "--fold-seed", "4", "--out", out,
                 "--name", "g")
    assert result.exit_code == 0, result.output
    return out / "g"


def fold_model_probabilities(run: Path, paths: list[Path]) -> np.ndarray:
    """What a fold's best.pt predicts, computed the long way: the one preprocessing function, the rebuilt model."""
    ckpt = load_checkpoint(run / "best.pt")
    model, pre = model_from_checkpoint(ckpt), preprocess_from_checkpoint(ckpt)
    batch = torch.from_numpy(np.stack([preprocess(str(p), pre) for p in paths]))
    with torch.no_grad():
        return torch.softmax(model(batch), dim=1).double().numpy()


def test_group_folder_record_and_runs(group, data):
    record = read_group(group)
    assert record.folds == 3 and record.fold_seed == 4 and record.arch == "cnn"
    assert record.members == ["fold-0", "fold-1", "fold-2"] and record.done == record.members
    assert record.classes == ["circle", "square", "star", "triangle"]
    assert record.config["data"] == str(data) and record.config["folds"] == 3
    assert set(record.cv) == {"mean_val_acc", "std_val_acc", "oof_acc", "oof_log_loss"}
    assert sorted(read_marker(group)["files"]) == ["group.json", "oof.csv"]
    for k in range(3):
        run = group / f"fold-{k}"
        assert {"config.json", "split.json", "history.csv", "curves.png", "best.pt", "last.pt"} <= {
            p.name for p in run.iterdir()}
        config = json.loads((run / "config.json").read_text())["train"]
        assert (config["folds"], config["fold_seed"], config["fold"]) == (3, 4, k)
        assert load(run / "last.pt")["epoch"] == 1
    vals = [json.loads((group / f"fold-{k}" / "split.json").read_text())["val"] for k in range(3)]
    assert sorted(sum(vals, [])) == sorted(p.relative_to(data).as_posix() for p in data.glob("*/*"))
    assert [len(v) for v in vals] == [8, 8, 8]


def test_each_oof_row_is_its_own_fold_models_prediction(group, data):
    oof = read_oof(group / "oof.csv")
    header = (group / "oof.csv").read_text().splitlines()[0]
    assert header == "id,label,fold,circle,square,star,triangle"
    images = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*"))
    assert sorted(oof.ids) == images and oof.probs.shape == (24, 4)  # every training image, once
    assert oof.labels == [image.split("/")[0] for image in oof.ids]
    for k in range(3):
        run = group / f"fold-{k}"
        split = json.loads((run / "split.json").read_text())
        rows = np.flatnonzero(oof.folds == k)
        assert sorted(oof.ids[i] for i in rows) == sorted(split["val"])  # the rows of fold k: its validation images
        assert not set(split["val"]) & set(split["train"])  # ... which its model never trained on
        expected = fold_model_probabilities(run, [data / oof.ids[i] for i in rows])
        np.testing.assert_allclose(oof.probs[rows], expected, rtol=1e-5, atol=1e-6)
    cv = read_group(group).cv
    accs = [load(group / f"fold-{k}" / "best.pt")["best_val_acc"] for k in range(3)]
    assert cv["mean_val_acc"] == pytest.approx(np.mean(accs)) and cv["std_val_acc"] == pytest.approx(np.std(accs))
    truth = oof.label_indices()
    assert cv["oof_acc"] == pytest.approx(np.mean(oof.probs.argmax(1) == truth))
    assert cv["oof_log_loss"] == pytest.approx(log_loss(oof.probs, truth), rel=1e-4)


def test_the_cli_prints_the_cv_table(data, tmp_path):
    result = clf("train", data, *TINY_CLI, "--epochs", "1", "--folds", "2", "--out", tmp_path, "--name", "two")
    assert result.exit_code == 0, result.output
    assert "fold 1/2" in result.output and "fold 2/2" in result.output
    cv = read_group(tmp_path / "two").cv
    assert f"{cv['mean_val_acc']:.4f} ± {cv['std_val_acc']:.4f}" in result.output
    assert f"log-loss {cv['oof_log_loss']:.4f}" in result.output and "out-of-fold" in result.output


def test_resume_keeps_finished_folds_and_continues_the_interrupted_one_exactly(data, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    # fold-0 trains epochs 1-2, fold-1 epoch 1, then Ctrl-C in its epoch 2
    interrupt_in_epoch(monkeypatch, epoch=4, after_batches=1)
    first = clf("train", data, *TINY_CLI, "--epochs", "2", "--folds", "3", "--out", out, "--name", "g")
    assert first.exit_code == 130, first.output
    monkeypatch.undo()
    g = out / "g"
    assert read_group(g).done == ["fold-0"] and read_group(g).cv is None
    assert load(g / "fold-1" / "last.pt")["epoch"] == 1 and not (g / "fold-2").exists() and not (g / "oof.csv").exists()
    fold0 = {name: (g / "fold-0" / name).read_bytes() for name in ("best.pt", "last.pt", "history.csv")}

    second = clf("train", "--resume", g, *RESUME)
    assert second.exit_code == 0, second.output
    assert "fold-0: finished earlier, kept" in second.output and "fold-1: resuming from its last.pt" in second.output
    assert {name: (g / "fold-0" / name).read_bytes() for name in fold0} == fold0  # not retrained
    record = read_group(g)
    assert record.done == ["fold-0", "fold-1", "fold-2"] and record.cv is not None and (g / "oof.csv").exists()
    assert [r["epoch"] for r in read_history_csv(g / "fold-1" / "history.csv")] == [1, 2]
    assert load(g / "fold-2" / "last.pt")["epoch"] == 2

    straight = train(data, tmp_path / "straight", "fold-1", epochs=2, folds=3, fold=1)  # fold 1, never interrupted
    assert_same_weights(load(g / "fold-1" / "last.pt")["model"], load(straight.run_dir / "last.pt")["model"])

    third = clf("train", "--resume", g, *RESUME, "--epochs", "3")  # raising --epochs trains every fold further
    assert third.exit_code == 0, third.output
    assert all(load(g / f"fold-{k}" / "last.pt")["epoch"] == 3 for k in range(3))
    assert read_group(g).config["epochs"] == 3


def test_resume_with_changed_data_is_refused(group, data, tmp_path):
    copy = tmp_path / "g"
    shutil.copytree(group, copy)
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    next(iter(sorted((moved / "star").iterdir()))).unlink()  # one image fewer: the folds would shift
    before = sorted((p.name, p.stat().st_mtime_ns) for p in copy.rglob("*"))
    result = clf("train", moved, "--resume", copy, *RESUME, "--epochs", "2")
    assert result.exit_code == 2
    assert "split.json: fold 0 validated on other images than fold 0 of the data now" in error_line(result)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in copy.rglob("*")) == before


def test_csv_labelled_data(data, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["filename,label"]
    for image in sorted(data.glob("*/*")):
        name = f"{image.parent.name}-{image.name}"
        shutil.copy(image, flat / name)
        rows.append(f"{name},{image.parent.name}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = clf("train", flat, "--labels-csv", tmp_path / "labels.csv", *TINY_CLI, "--epochs", "1", "--folds", "2",
                 "--out", tmp_path / "runs", "--name", "csv")
    assert result.exit_code == 0, result.output
    oof = read_oof(tmp_path / "runs" / "csv" / "oof.csv")
    assert sorted(zip(oof.ids, oof.labels)) == sorted(tuple(row.split(",")) for row in rows[1:])
    for k in range(2):
        split = json.loads((tmp_path / "runs" / "csv" / f"fold-{k}" / "split.json").read_text())
        assert sorted(split["val"]) == sorted(oof.ids[i] for i in np.flatnonzero(oof.folds == k))


def test_an_unreadable_image_is_reported_once_and_left_out_of_every_fold(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "circle" / "broken.png").write_bytes(b"not a png")
    result = clf("train", copy, *TINY_CLI, "--epochs", "1", "--folds", "2", "--out", tmp_path / "runs", "--name", "b")
    assert result.exit_code == 0, result.output
    assert result.output.count("broken.png") == 1, result.output  # the group checks the images once, not per fold
    oof = read_oof(tmp_path / "runs" / "b" / "oof.csv")
    assert len(oof.ids) == 24 and "circle/broken.png" not in oof.ids


def test_a_deleted_fold_folder_is_shown_missing_and_trained_again_alone(group, tmp_path):
    """Issue 24: `clf runs` said "done" with the full CV, and --resume refused with --overwrite as the remedy (which
    would discard the finished folds). Now the group is listed incomplete and --resume trains the missing fold only."""
    root = tmp_path / "runs"
    shutil.copytree(group, root / "g")
    g = root / "g"
    shutil.rmtree(g / "fold-1")
    kept = {k: tree_digest(g / f"fold-{k}") for k in (0, 2)}

    listed = clf("runs", root)
    assert listed.exit_code == 0, listed.output
    row = " ".join(line for line in listed.output.splitlines() if "│" in line and "group" not in line)
    assert "2/3 folds" in row and "fold-1" in row and "missing" in row and "done" not in row, listed.output
    cv = read_group(group).cv
    assert f"{cv['oof_acc']:.4f}" not in listed.output and f"{cv['mean_val_acc']:.4f}" not in listed.output

    resumed = clf("train", "--resume", g, "--folds", "3", *RESUME)
    assert resumed.exit_code == 0, resumed.output
    assert "fold-0: finished earlier, kept" in resumed.output and "fold-2: finished earlier, kept" in resumed.output
    assert "fold-1: training" in resumed.output
    assert "fold-1: finished earlier, but its checkpoints are gone; training it again" in resumed.output
    assert {k: tree_digest(g / f"fold-{k}") for k in (0, 2)} == kept  # the finished folds are untouched
    # the same fold model as the first sitting trained (same seed, same images): the group is whole again
    assert_same_weights(load(g / "fold-1" / "best.pt")["model"], load(group / "fold-1" / "best.pt")["model"])
    record = read_group(g)
    assert record.done == ["fold-0", "fold-1", "fold-2"] and record.cv == pytest.approx(cv)
    assert (g / "oof.csv").read_bytes() == (group / "oof.csv").read_bytes()
    listed = clf("runs", root)
    assert "done" in listed.output and f"{cv['oof_acc']:.4f}" in listed.output


def test_clf_runs_shows_a_group_as_one_line(group, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(group, root / "g")
    shutil.copytree(group / "fold-0", root / "plain")  # an ordinary run beside it
    cv = read_group(group).cv
    result = clf("runs", root)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    group_lines = [line for line in lines if line.startswith("│ g ")]
    assert len(group_lines) == 1, result.output
    assert f"{cv['mean_val_acc']:.4f} ± {cv['std_val_acc']:.4f}" in group_lines[0]
    assert f"{cv['oof_acc']:.4f}" in group_lines[0] and f"{cv['oof_log_loss']:.4f}" in group_lines[0]
    assert "│ cnn " in group_lines[0] and "│ 3 │" in group_lines[0] and "done" in group_lines[0]
    assert "fold-0" not in result.output and any(line.startswith("│ plain") for line in lines)

    expanded = clf("runs", root, "--folds")
    assert expanded.exit_code == 0, expanded.output
    members = [line for line in expanded.output.splitlines() if line.startswith("│   fold-")]
    assert len(members) == 3 and all("done" in line for line in members)


def test_clf_runs_skips_a_damaged_group(group, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(group, root / "g")
    (root / "bad").mkdir()
    (root / "bad" / "group.json").write_text("{not json")
    record = json.loads((group / "group.json").read_text())
    shutil.copytree(group, root / "odd")
    (root / "odd" / "group.json").write_text(json.dumps({**record, "cv": {"oof_acc": "high", "mean_val_acc": None}}))
    result = clf("runs", root)
    assert result.exit_code == 0, result.output
    assert "unreadable fold-group record (JSONDecodeError)" in result.output and "│ g " in result.output
    assert any(line.startswith("│ odd ") for line in result.output.splitlines())  # shown, its odd scores left blank


def test_ctrl_c_as_the_group_finishes_prints_no_traceback(data, tmp_path):
    """Issue 24: Ctrl-C as a fold group finished printed "Exception ignored in: <function WeakKeyDictionary...>
    KeyboardInterrupt". SIGINT as soon as the CV table is out (torch's teardown still to come): the exit code is
    the command's (0: the group is whole) or, when the signal beat the command's end, 130; never a traceback.
    Where the signal lands is timing: the two ways it went wrong are pinned deterministically in test_cli.py (the
    process teardown) and test_fit.py (fit's own teardown)."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "clf", "train", str(data), *TINY_CLI, "--epochs", "1", "--folds", "2", "--out",
               str(tmp_path), "--name", "end"]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "out-of-fold" in line:  # the last row of the CV table
                process.send_signal(signal.SIGINT)
                break
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert any("out-of-fold" in line for line in lines), "".join(lines) + stderr
    assert process.returncode in (0, 130), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "KeyboardInterrupt" not in stderr, \
        stderr
    if process.returncode == 0:
        assert read_group(tmp_path / "end").cv is not None


# ---------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_folds_under_torchrun(data, tmp_path):
    """Two processes train the folds one after the other (DDP each); rank 0 alone writes group.json and oof.csv."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = [data, *[a for a in TINY_CLI if a != "--quiet"], "--epochs", "1", "--folds", "2", "--out", tmp_path,
            "--name", "ddp"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "clf", "train", *map(str, args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and "terminate called" not in output, output
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    record = read_group(tmp_path / "ddp")
    assert record.done == ["fold-0", "fold-1"] and record.cv is not None
    assert read_oof(tmp_path / "ddp" / "oof.csv").probs.shape == (24, 4)
    assert result.stdout.count("2-fold cross-validation") == 1  # rank 0 prints the table
    assert "distributed: rank 1 of 2 on cpu (gloo)" in output
    for k in range(2):
        assert [r["epoch"] for r in load(tmp_path / "ddp" / f"fold-{k}" / "last.pt")["history"]] == [1]
