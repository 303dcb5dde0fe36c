"""`clf train` through typer's CliRunner: learning, bad input, resume refusals, Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import clf, error_line
from train_helpers import interrupt_in_epoch, load, make_data

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
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "curves.png", "history.csv", "last.pt"]


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


def test_overwrite_replaces_only_run_folders(data, tmp_path):
    precious = tmp_path / "runs" / "thesis"
    precious.mkdir(parents=True)
    (precious / "chapter1.txt").write_text("years of work")
    result = clf("train", data, *FAST, "--epochs", "1", "--out", tmp_path / "runs", "--name", "thesis", "--overwrite")
    assert error_line(result) == f"error: {precious}: exists and is not a clf run folder; --overwrite only replaces run folders"
    assert (precious / "chapter1.txt").read_text() == "years of work"


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
