"""clf.train.history: history.csv columns and round trip, curves.png plotted against the true epoch numbers."""

import pytest

from clf.train import history
from clf.train.history import (HISTORY_COLUMNS, next_sitting, plot_curves, read_history_csv, sitting_starts,
                                 write_history_csv)

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
    assert path.read_text().splitlines()[1:] == ["5,1.25,,1.5,0.375,1,0.625,0.001,2.5",
                                                 "6,0.75,,1,0.5,0.5,0.75,0.0005,2"]
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
    assert labels == [history.TRAIN_ACC_NA, "val", "EMA val"]
    assert history.TRAIN_ACC_NA == "train acc n/a with mixup/cutmix"
    assert len(acc_axis.get_lines()[0].get_xdata()) == 0  # a legend entry, no curve
    assert list(acc_axis.get_lines()[2].get_ydata()) == [r["ema_val_acc"] for r in MIXED_EMA]
    assert [t.get_text() for t in acc_axis.get_legend().get_texts()] == labels
    assert figure._suptitle.get_text() == "run; train acc n/a with mixup/cutmix"


# ---------------------------------------------------------------- the selection key


def row(epoch, acc, loss, ema_acc=None, ema_loss=None):
    return {"epoch": epoch, "val_acc": acc, "val_loss": loss, "ema_val_acc": ema_acc, "ema_val_loss": ema_loss}


def test_the_key_is_accuracy_then_the_lower_loss():
    key = history.selection_key
    assert key(0.75, 0.5) > key(0.5, 0.1)  # accuracy first
    assert key(1.0, 0.2) > key(1.0, 0.3)  # a tie on accuracy goes to the lower loss
    assert key(1.0, 0.3) == key(1.0, 0.3)
    assert key(1.0, 9.0) > key(1.0, None)  # a missing loss ranks last among equal accuracies


def test_a_tie_on_accuracy_goes_to_the_later_epoch_with_the_lower_loss():
    rows = [row(1, 0.5, 0.9), row(2, 1.0, 0.4), row(3, 1.0, 0.1), row(4, 1.0, 0.2), row(5, 0.75, 0.01)]
    assert history.best_epoch(rows) == 3
    assert history.best_row(rows) is rows[2]
    assert history.epoch_acc(rows[2]) == 1.0


def test_a_full_tie_keeps_the_earlier_epoch():
    assert history.best_epoch([row(1, 0.5, 0.5), row(2, 0.5, 0.5)]) == 1


def test_ema_and_raw_are_compared_on_the_same_footing():
    equal_acc_ema_lower_loss = row(1, 0.75, 0.5, ema_acc=0.75, ema_loss=0.25)
    assert history.epoch_winner(equal_acc_ema_lower_loss, ema_on=True) == "ema"
    assert history.epoch_score(equal_acc_ema_lower_loss) == (0.75, -0.25)
    assert history.epoch_winner(row(1, 0.75, 0.25, ema_acc=0.75, ema_loss=0.5), ema_on=True) == "raw"
    assert history.epoch_winner(row(1, 0.75, 0.5, ema_acc=0.75, ema_loss=0.5), ema_on=True) == "raw"  # full tie
    assert history.epoch_winner(row(1, 0.5, 0.1, ema_acc=0.75, ema_loss=0.9), ema_on=True) == "ema"  # accuracy first
    # across epochs the winner's key counts: epoch 2's EMA weights tie epoch 1's accuracy at a lower loss
    assert history.best_epoch([row(1, 1.0, 0.3), row(2, 0.5, 0.9, ema_acc=1.0, ema_loss=0.2)]) == 2


def test_without_validation_the_last_epoch_and_the_ema_weights_as_before():
    rows = [row(1, None, None), row(2, None, None)]
    assert history.best_epoch(rows) is None and history.epoch_score(rows[0]) is None
    assert history.epoch_winner(rows[1], ema_on=True) == "ema"
    assert history.epoch_winner(rows[1], ema_on=False) == "raw"
    assert not history.patience_exhausted(rows, 1)


def test_patience_counts_epochs_since_the_best_by_the_key():
    rows = [row(1, 1.0, 0.5), row(2, 1.0, 0.4), row(3, 1.0, 0.45)]
    assert not history.patience_exhausted(rows, 2)  # epoch 2 is the best: its lower loss is a gain
    assert history.patience_exhausted(rows, 1)
    assert not history.patience_exhausted(rows, 0)  # 0 = off


def test_the_saturation_note_names_the_first_saturated_and_the_chosen_epoch():
    rows = [row(1, 0.75, 0.9), row(2, 0.5, 0.8, ema_acc=1.0, ema_loss=0.6), row(3, 1.0, 0.3, ema_acc=1.0,
                                                                               ema_loss=0.2), row(4, 1.0, 0.25)]
    assert history.saturation_note(rows, ema_on=True) == (
        "val accuracy 1.00 since epoch 2: validation can no longer rank checkpoints; best.pt chosen by val loss "
        "(epoch 3, EMA weights)")
    later = row(4, 1.0, 0.1, ema_acc=1.0, ema_loss=0.15)
    assert history.saturation_note(rows[:3] + [later], ema_on=True).endswith("(epoch 4, raw weights)")


@pytest.mark.parametrize("rows", [
    [row(1, 0.875, 0.3), row(2, 0.875, 0.2)],  # a tie below 1.0: the key's ordinary work, no note
    [row(1, 0.5, 0.3), row(2, 1.0, 0.2), row(3, 0.875, 0.1)],  # 1.0 once: accuracy alone chose it
    [row(1, None, None), row(2, None, None)],  # no validation
])
def test_no_saturation_note(rows):
    assert history.saturation_note(rows, ema_on=False) is None


def test_a_run_with_another_metric_ranks_its_epochs_by_that_metric():
    """Epoch 2 has the better accuracy, epoch 1 the better macro-F1; log-loss is lower-is-better."""
    from clf.train.history import best_epoch, epoch_acc, patience_exhausted

    rows = [{"epoch": 1, "val_loss": 0.9, "val_acc": 0.70, "val_metric": 0.66},
            {"epoch": 2, "val_loss": 0.8, "val_acc": 0.75, "val_metric": 0.60},
            {"epoch": 3, "val_loss": 0.7, "val_acc": 0.72, "val_metric": 0.66}]
    assert best_epoch(rows) == 2  # accuracy
    assert best_epoch(rows, "f1_macro") == 3  # 0.66 twice: the lower val loss
    assert epoch_acc(rows[2], "f1_macro") == 0.72
    assert best_epoch(rows, "log_loss") == 2  # 0.60 is the lowest log-loss
    assert patience_exhausted(rows, 1, "log_loss") and not patience_exhausted(rows, 1, "f1_macro")
    undefined = [{**rows[0], "val_metric": float("nan")}, rows[1]]
    assert best_epoch(undefined, "roc_auc") == 2  # an undefined value ranks last


def test_history_csv_gets_the_metric_columns_only_from_a_run_that_has_them(tmp_path):
    path = tmp_path / "history.csv"
    write_history_csv([{**ROWS[0], "val_metric": 0.5, "metric": "f1_macro"}], path)
    assert path.read_text().splitlines() == [
        "epoch,train_loss,train_acc,val_loss,val_acc,ema_val_loss,ema_val_acc,lr,seconds,val_metric,ema_val_metric",
        "5,1.25,0.5,1.5,0.375,,,0.001,2.5,0.5,"]
    assert read_history_csv(path)[0]["val_metric"] == 0.5


def test_sittings_are_written_once_a_run_was_resumed_and_read_back(tmp_path):
    path = tmp_path / "history.csv"
    one_go = [{**row, "sitting": 1} for row in ROWS]
    write_history_csv(one_go, path)
    assert path.read_text().splitlines()[0].split(",") == list(HISTORY_COLUMNS)  # one sitting: the columns as before
    assert sitting_starts(read_history_csv(path)) == []
    resumed = [{**row, "sitting": 1 if row["epoch"] < 6 else 2} for row in ROWS]
    write_history_csv(resumed, path)
    assert path.read_text().splitlines()[0].split(",")[-1] == "sitting"
    back = read_history_csv(path)
    assert [row["sitting"] for row in back] == [row["sitting"] for row in resumed]
    assert sitting_starts(back) == [6]
    assert next_sitting(back) == 3 and next_sitting([]) == 1 and next_sitting(ROWS) == 2  # unrecorded: sitting 1
