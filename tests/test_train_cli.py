"""`clf train` through typer's CliRunner: learning, bad input, resume refusals, Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from temp_helpers import write_stale_temp
from train_helpers import interrupt_in_epoch, load, make_data, make_easy_data

from clf.ownership import MARKER_NAME, read_marker
from clf.train.history import read_history_csv
from clf.train.run_folder import RUN_FILES

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet"]




@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def done_run(data, tmp_path_factory) -> Path:
    """A finished 1-epoch run to resume (or fail to)."""
    out = tmp_path_factory.mktemp("runs")
    result = clf("train", data, *FAST, "--epochs", "1", "--lr", "0.003", "--out", out, "--name", "one")
    assert result.exit_code == 0, result.output
    return out / "one"


def test_train_learns_the_sample_competition(tmp_path):
    """The slow one (~10 s): 200 images of 4 shapes at 32 px, 10 epochs, well above the 0.25 of chance."""
    train_dir = make_data(tmp_path / "data", n_per_class=50)
    result = clf("train", train_dir, "--arch", "cnn", "--img-size", "32", "--batch-size", "16", "--epochs", "10",
                 "--lr", "3e-3", "--workers", "0", "--device", "cpu", "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "cnn-32"  # the default name: ARCH-SIZE
    best = load(run / "best.pt")
    assert best["best_val_acc"] >= 0.6, result.output
    assert result.output.splitlines()[-1] == f"{run}: 10 epochs, best val acc {best['best_val_acc']:.4f}"
    epoch_lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 10 and epoch_lines[0].startswith("epoch   1/10  train loss ")
    assert sorted(p.name for p in run.iterdir()) == [
        ".clf-folder.json", "best.pt", "config.json", "curves.png", "history.csv", "last.pt", "split.json"]
    assert read_marker(run)["files"] == sorted(RUN_FILES)


def test_saturated_validation_keeps_a_later_checkpoint_and_says_so(tmp_path):
    """Val accuracy reaches 1.00 early and stays; best.pt is the saturated epoch with the lowest val loss, not the
    first one, and the run says so in one warning (shown with --quiet too)."""
    data = make_easy_data(tmp_path / "easy")
    run = tmp_path / "runs" / "sat"
    result = clf("train", data, *FAST, "--epochs", "8", "--lr", "3e-3", "--ema", "0", "--augment", "none",
                 "--out", run.parent, "--name", "sat")
    assert result.exit_code == 0, result.output
    rows = read_history_csv(run / "history.csv")
    saturated = [r for r in rows if r["val_acc"] == 1.0]
    first, chosen = saturated[0], min(saturated, key=lambda r: r["val_loss"])
    assert len(saturated) >= 2 and chosen["epoch"] > first["epoch"], rows  # the data does what it is for
    best = load(run / "best.pt")
    assert (best["epoch"], best["weights"], best["best_val_acc"]) == (chosen["epoch"], "raw", 1.0)
    line = (f"WARNING val accuracy 1.00 since epoch {first['epoch']}: validation can no longer rank checkpoints; "
            f"best.pt chosen by val loss (epoch {chosen['epoch']}, raw weights)")
    assert result.output.splitlines().count(line) == 1, result.output
    assert result.output.splitlines()[-1] == f"{run}: 8 epochs, best val acc 1.0000"


def test_missing_data_folder(tmp_path):
    result = clf("train", tmp_path / "nope", *FAST, "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'nope'}: folder not found"
    assert not (tmp_path / "runs").exists()


def test_no_data_and_no_resume(tmp_path):
    result = clf("train", "--arch", "cnn", "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result).startswith("error: clf train needs DATA")


def test_unknown_arch_leaves_no_run_folder(data, tmp_path):
    result = clf("train", data, *FAST, "--arch", "resnet_nope", "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert error_line(result) == "error: unknown architecture 'resnet_nope'; see `clf models`"
    assert not (tmp_path / "runs" / "resnet_nope-32").exists()


def test_existing_run_name_needs_overwrite(data, done_run):
    result = clf("train", data, *FAST, "--epochs", "1", "--out", done_run.parent, "--name", "one")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run}: run folder already exists; use --resume {done_run} to continue it, "
        "--overwrite to start over, or another --name"
    )
    assert load(done_run / "last.pt")["epoch"] == 1  # untouched


def test_path_with_brackets_is_printed_as_is(tmp_path):
    missing = tmp_path / "[/2024]" / "train"
    result = clf("train", missing, *FAST)
    assert result.exit_code == 2
    assert error_line(result) == f"error: {missing}: folder not found"


def test_resume_when_already_done(done_run):
    result = clf("train", "--resume", done_run, "--workers", "0", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run / 'last.pt'}: already trained 1 epochs; pass --epochs N with N > 1 to train further"
    )


def test_resume_with_another_arch(done_run):
    result = clf("train", "--resume", done_run, "--arch", "resnet18", "--epochs", "2")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run / 'last.pt'}: checkpoint is arch 'cnn', not 'resnet18'; resume with the same --arch"
    )


def test_resume_with_another_lr(done_run):
    result = clf("train", "--resume", done_run, "--lr", "0.1", "--epochs", "2")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run / 'last.pt'}: --lr 0.1 differs from the checkpoint's 0.003; "
        "a resumed run keeps its training settings (start a new run to change them)"
    )


def test_resume_on_data_with_other_classes(done_run, tmp_path):
    other = make_data(tmp_path / "three", classes=("circle", "square", "cross"))
    result = clf("train", other, "--resume", done_run, "--epochs", "2", "--workers", "0", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run / 'last.pt'}: checkpoint was trained on classes ['circle', 'square', 'star', 'triangle'] "
        "but the data has ['circle', 'cross', 'square']; resume with the same data or start a new run"
    )
    assert load(done_run / "last.pt")["epoch"] == 1


def test_resume_of_a_missing_run(tmp_path):
    result = clf("train", "--resume", tmp_path / "gone")
    assert result.exit_code == 2
    assert error_line(result) == f"error: {tmp_path / 'gone'}: no such run folder or checkpoint file"


def test_ctrl_c_saves_and_resume_continues(data, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=2)
        result = clf("train", data, *FAST, "--epochs", "3", "--out", tmp_path, "--name", "cut")
    run = tmp_path / "cut"
    assert result.exit_code == 130
    assert result.output.splitlines()[-1] == "interrupted"
    assert "Traceback" not in result.output
    assert load(run / "last.pt")["epoch"] == 1  # the epoch before the interrupted one, loadable

    result = clf("train", "--resume", run, "--workers", "0", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines() if line.startswith("epoch ")] == ["2/3", "3/3"]
    assert [r["epoch"] for r in load(run / "last.pt")["history"]] == [1, 2, 3]
    assert result.output.splitlines()[-1].startswith(f"{run}: 3 epochs, best val acc ")


@pytest.mark.parametrize("name", ["../elsewhere", ".", "a/b"])
def test_a_run_name_is_one_folder_name(data, tmp_path, name):
    result = clf("train", data, *FAST, "--epochs", "1", "--out", tmp_path / "runs", "--name", name, "--overwrite")
    assert result.exit_code == 2
    assert error_line(result) == (f"error: --name '{name}': a run name is a plain folder name (no '/', '..'); "
                                  "use --out for the parent folder")


def test_overwrite_refuses_a_folder_clf_did_not_mark(data, tmp_path):
    precious = tmp_path / "runs" / "thesis"
    precious.mkdir(parents=True)
    (precious / "chapter1.txt").write_text("years of work")
    result = clf("train", data, *FAST, "--epochs", "1", "--out", tmp_path / "runs", "--name", "thesis", "--overwrite")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {precious}: not a run folder written by clf (no {MARKER_NAME}; holds chapter1.txt); "
        "--overwrite only replaces clf's own folders: remove it yourself or choose another name")
    assert (precious / "chapter1.txt").read_text() == "years of work"


def test_overwrite_keeps_a_users_files_that_sit_beside_a_config_json(data, tmp_path):
    """v0.1 took any config.json as proof of a run and deleted precious.txt and src/ with it."""
    proj = tmp_path / "runs" / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text('{"mine": true}')
    (proj / "precious.txt").write_text("keep me")
    (proj / "src" / "main.py").write_text("print('hi')")
    result = clf("train", data, *FAST, "--epochs", "1", "--out", tmp_path / "runs", "--name", "proj", "--overwrite")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {proj}: not a run folder written by clf (no {MARKER_NAME}; holds config.json, precious.txt, src); "
        "--overwrite only replaces clf's own folders: remove it yourself or choose another name")
    assert (proj / "precious.txt").read_text() == "keep me" and (proj / "src" / "main.py").exists()
    assert (proj / "config.json").read_text() == '{"mine": true}'


def test_overwrite_refuses_a_run_folder_holding_a_users_file(done_run, data, tmp_path):
    notes = done_run / "notes.txt"
    notes.write_text("what I tried")
    try:
        result = clf("train", data, *FAST, "--epochs", "1", "--out", done_run.parent, "--name", "one", "--overwrite")
        assert result.exit_code == 2
        assert error_line(result) == (
            f"error: {done_run}: holds 1 file(s) clf did not write (notes.txt); "
            "--overwrite only removes clf's own files: move them out or choose another name")
        assert notes.read_text() == "what I tried" and load(done_run / "last.pt")["epoch"] == 1
    finally:
        notes.unlink()


def test_overwrite_replaces_a_run_and_the_files_export_recorded(data, tmp_path):
    out = tmp_path / "runs"
    assert clf("train", data, *FAST, "--epochs", "2", "--out", out, "--name", "r").exit_code == 0
    run = out / "r"
    from clf.ownership import record_files

    record_files(run, ["model.onnx"])  # what export does before writing its model
    (run / "model.onnx").write_bytes(b"onnx")
    result = clf("train", data, *FAST, "--epochs", "1", "--out", out, "--name", "r", "--overwrite")
    assert result.exit_code == 0, result.output
    assert load(run / "last.pt")["epoch"] == 1 and not (run / "model.onnx").exists()
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER_NAME, *RUN_FILES])


def test_ctrl_c_in_the_first_epoch_of_an_overwrite_keeps_the_old_run(data, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    assert clf("train", data, *FAST, "--epochs", "2", "--out", out, "--name", "r").exit_code == 0
    run = out / "r"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=1, after_batches=1)
        result = clf("train", data, *FAST, "--epochs", "3", "--out", out, "--name", "r", "--overwrite")
    assert result.exit_code == 130
    assert (f"interrupted during epoch 1: the old run in {run} was left as it was (--overwrite replaces it only "
            "when the new run's first epoch is saved)") in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_run_cut_before_its_first_epoch_gets_one_advice(data, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=1, after_batches=1)
        result = clf("train", data, *FAST, "--epochs", "2", "--out", out, "--name", "cut")
    run = out / "cut"
    assert result.exit_code == 130
    assert f"interrupted during epoch 1: no finished epoch to resume in {run}; start it again with --overwrite" \
        in result.output
    again = clf("train", data, *FAST, "--epochs", "2", "--out", out, "--name", "cut")
    assert error_line(again) == (f"error: {run}: run folder already exists; no finished epoch to resume; "
                                 "start it again with --overwrite, or use another --name")
    resumed = clf("train", "--resume", run, "--epochs", "2")
    assert error_line(resumed) == f"error: {run}: no finished epoch to resume; start it again with --overwrite"
    assert clf("train", data, *FAST, "--epochs", "1", "--out", out, "--name", "cut", "--overwrite").exit_code == 0
    assert load(run / "last.pt")["epoch"] == 1


def test_a_v01_run_folder_without_a_marker_still_resumes(data, tmp_path):
    out = tmp_path / "runs"
    assert clf("train", data, *FAST, "--epochs", "1", "--out", out, "--name", "old").exit_code == 0
    run = out / "old"
    (run / MARKER_NAME).unlink()
    (run / "split.json").unlink()
    stale = write_stale_temp(run, b"half a checkpoint")  # left by a kill -9
    result = clf("train", "--resume", run, "--epochs", "2", "--workers", "0", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert load(run / "last.pt")["epoch"] == 2
    assert not (run / MARKER_NAME).exists() and not stale.exists()


def test_an_image_size_the_arch_cannot_take_is_refused_before_training(data, tmp_path):
    result = clf("train", data, "--arch", "alexnet", "--img-size", "32", "--epochs", "1", "--workers", "0",
                 "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 2
    assert error_line(result).startswith("error: img_size 32 does not work with arch 'alexnet'")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_data_path_is_stored_absolute(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.parent)
    result = clf("train", data.name, *FAST, "--epochs", "1", "--out", tmp_path / "runs", "--name", "rel")
    assert result.exit_code == 0, result.output
    assert load(tmp_path / "runs" / "rel" / "last.pt")["config"]["data"] == str(data.resolve())


def test_resuming_an_older_checkpoint_of_a_run_is_refused(data, tmp_path):
    out = tmp_path / "runs"
    assert clf("train", data, *FAST, "--epochs", "2", "--lr", "0", "--out", out, "--name", "r").exit_code == 0
    run = out / "r"
    best_epoch = load(run / "best.pt")["epoch"]
    assert best_epoch == 1  # lr 0: val accuracy never improves after epoch 1
    result = clf("train", "--resume", run / "best.pt", "--epochs", "3", "--workers", "0", "--quiet")
    assert error_line(result) == (f"error: {run / 'best.pt'}: holds epoch 1 but {run / 'last.pt'} holds epoch 2; "
                                  f"resuming from it would erase the later epochs; resume {run} (its last.pt)")
    assert load(run / "last.pt")["epoch"] == 2


def test_an_unwritable_output_is_one_line(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = clf("train", data, *FAST, "--epochs", "1", "--out", blocker / "runs")
    assert result.exit_code == 2
    assert error_line(result).startswith(f"error: {blocker / 'runs'}")


def test_sigterm_finishes_the_save_and_prints_the_resume_command(data, tmp_path):
    """What a job scheduler sends: exit 143, last.pt a whole epoch, the resume command, and the resume works."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "runs"
    run = out / "term"
    command = [sys.executable, "-m", "clf", "train", str(data), *FAST, "--epochs", "500", "--out", str(out),
               "--name", "term"]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "history.csv").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr and stderr.splitlines()[-1] == "terminated (SIGTERM)"
    done = load(run / "last.pt")["epoch"]
    assert f"; {run / 'last.pt'} holds epoch {done}; continue with: clf train --resume {run}" in stderr
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    resumed = clf("train", "--resume", run, "--epochs", str(done + 1), "--workers", "0", "--device", "cpu", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in load(run / "last.pt")["history"]] == list(range(1, done + 2))


def test_loss_focal_reaches_the_trainer_and_the_run_records_it(data, tmp_path):
    """The same seed and data: focal's first-epoch loss is well below cross-entropy's ((1 - p)^2 < 1 on every term)."""
    losses = {}
    for loss in ("cross_entropy", "focal"):
        result = clf("train", data, *FAST, "--epochs", "1", "--loss", loss, "--out", tmp_path, "--name", loss)
        assert result.exit_code == 0, result.output
        assert load(tmp_path / loss / "best.pt")["config"]["loss"] == loss
        losses[loss] = read_history_csv(tmp_path / loss / "history.csv")[0]["train_loss"]
    assert losses["focal"] < 0.8 * losses["cross_entropy"]


@pytest.mark.parametrize("name", ["nope", "soft_target_cross_entropy"])
def test_an_unknown_loss_is_one_line_before_any_run_folder(data, tmp_path, name):
    result = clf("train", data, *FAST, "--loss", name, "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == f"error: --loss '{name}': unknown; choose one of cross_entropy, focal, bce, asl"
    assert list(tmp_path.iterdir()) == []


def test_metric_f1_macro_is_recorded_each_epoch_and_ranks_best_pt(data, tmp_path):
    from clf.train.history import best_epoch

    result = clf("train", data, *FAST, "--epochs", "3", "--metric", "f1_macro", "--ema", "0", "--out", tmp_path,
                 "--name", "f1")
    assert result.exit_code == 0, result.output
    rows = read_history_csv(tmp_path / "f1" / "history.csv")
    assert all(0.0 <= row["val_metric"] <= 1.0 for row in rows)
    assert load(tmp_path / "f1" / "best.pt")["epoch"] == best_epoch(rows, "f1_macro")
    assert all(" f1_macro " in line for line in result.output.splitlines() if line.startswith("epoch "))


def test_metric_qwk_on_classes_that_are_not_grades_is_one_line_before_any_run_folder(data, tmp_path):
    result = clf("train", data, *FAST, "--metric", "qwk", "--out", tmp_path)
    assert result.exit_code == 2
    assert error_line(result) == ("error: --metric qwk needs ordered classes: name them by grade (0, 1, 2, ...); the "
                                  "classes are circle, square, star, triangle")
    assert list(tmp_path.iterdir()) == []


def test_resume_with_another_metric_is_refused(done_run):
    """The metric ranks the epochs best.pt was chosen among: a resumed run keeps it (runs before --metric: accuracy)."""
    result = clf("train", "--resume", done_run, "--metric", "f1_macro", "--epochs", "2")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {done_run / 'last.pt'}: --metric f1_macro differs from the checkpoint's accuracy; "
        "a resumed run keeps its training settings (start a new run to change them)"
    )
