"""clf.train.history: history.csv columns and round trip, curves.png plotted against the true epoch numbers."""

import pytest

from clf.train import history
from clf.train.history import HISTORY_COLUMNS, plot_curves, read_history_csv, write_history_csv

NO_EMA = {"ema_val_loss": None, "ema_val_acc": None}
ROWS = [
    {"epoch": 5, "train_loss": 1.25, "train_acc": 0.5, "val_loss": 1.5, "val_acc": 0.375, **NO_EMA, "lr": 0.001,
     "seconds": 2.5},
    {"epoch": 6, "train_loss": 0.75, "train_acc": 0.625, "val_loss": 1.0, "val_acc": 0.5, **NO_EMA, "lr": 0.0005,
     "seconds": 2.0},
]
NO_VAL = [{**row, "val_loss": None, "val_acc": None} for row in ROWS]
# --mixup with --ema: no train accuracy (blended labels), EMA validated beside the raw weights
MIXED_EMA = [{**row, "train_acc": None, "ema_val_loss": row["val_loss"] - 0.5, "ema_val_acc": row["val_acc"] + 0.25}
             for row in ROWS]


def test_csv_columns_and_exact_text(tmp_path):
    path = tmp_path / "history.csv"
    write_history_csv(ROWS, path)
    assert HISTORY_COLUMNS == ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss", "ema_val_acc",
                               "lr", "seconds")
    assert path.read_text() == (
        "epoch,train_loss,train_acc,val_loss,val_acc,ema_val_loss,ema_val_acc,lr,seconds\n"
        "5,1.25,0.5,1.5,0.375,,,0.001,2.5\n"
        "6,0.75,0.625,1,0.5,,,0.0005,2\n"
    )


def test_csv_with_ema_and_no_train_accuracy(tmp_path):
    path = tmp_path / "history.csv"
    write_history_csv(MIXED_EMA, path)
    assert path.read_text().splitlines()[1:] == ["5,1.25,,1.5,0.375,1,0.625,0.001,2.5", "6,0.75,,1,0.5,0.5,0.75,0.0005,2"]
    assert read_history_csv(path) == MIXED_EMA


def test_csv_round_trip_and_blank_val(tmp_path):
    path = tmp_path / "history.csv"
    write_history_csv(ROWS, path)
    assert read_history_csv(path) == ROWS
    write_history_csv(NO_VAL, path)
    assert "5,1.25,0.5,,,,,0.001,2.5" in path.read_text().splitlines()
    back = read_history_csv(path)
    assert back == NO_VAL and isinstance(back[0]["epoch"], int)


def test_csv_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    write_history_csv(ROWS[:1], path)
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(history, "atomic_write_bytes", crash)
    with pytest.raises(OSError):
        write_history_csv(ROWS, path)
    assert path.read_text() == before


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib Figure plot_curves saves, captured so its lines can be inspected."""
    from matplotlib.figure import Figure

    figures = []
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return figures


def test_curves_use_true_epoch_numbers(tmp_path, drawn):
    path = tmp_path / "curves.png"
    plot_curves(ROWS, path, title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (figure,) = drawn
    loss_axis, acc_axis = figure.axes
    assert loss_axis.get_xlabel() == "epoch" and acc_axis.get_ylabel() == "accuracy"
    for axis, metric in ((loss_axis, "loss"), (acc_axis, "acc")):
        train, val = axis.get_lines()
        assert list(train.get_xdata()) == [5, 6] == list(val.get_xdata())  # a resumed run continues at 5, 6
        assert list(train.get_ydata()) == [r[f"train_{metric}"] for r in ROWS]
        assert list(val.get_ydata()) == [r[f"val_{metric}"] for r in ROWS]


def test_curves_without_validation_draw_train_only(tmp_path, drawn):
    plot_curves(NO_VAL, tmp_path / "curves.png")
    assert all(len(axis.get_lines()) == 1 for axis in drawn[0].axes)


def test_curves_draw_ema_val_and_say_why_train_accuracy_is_missing(tmp_path, drawn):
    plot_curves(MIXED_EMA, tmp_path / "curves.png", title="run; train acc n/a with mixup/cutmix")
    (figure,) = drawn
    loss_axis, acc_axis = figure.axes
    assert [line.get_label() for line in loss_axis.get_lines()] == ["train", "val", "EMA val"]
    assert list(loss_axis.get_lines()[2].get_ydata()) == [r["ema_val_loss"] for r in MIXED_EMA]
    labels = [line.get_label() for line in acc_axis.get_lines()]
    assert labels == [history.TRAIN_ACC_NA, "val", "EMA val"] and history.TRAIN_ACC_NA == "train acc n/a with mixup/cutmix"
    assert len(acc_axis.get_lines()[0].get_xdata()) == 0  # a legend entry, no curve
    assert list(acc_axis.get_lines()[2].get_ydata()) == [r["ema_val_acc"] for r in MIXED_EMA]
    assert [t.get_text() for t in acc_axis.get_legend().get_texts()] == labels
    assert figure._suptitle.get_text() == "run; train acc n/a with mixup/cutmix"
