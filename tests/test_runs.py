"""clf.train.runs and `clf runs`: one row per run folder, read from config.json + history.csv."""

import json
import logging

from typer.testing import CliRunner

from clf.cli import app
from clf.train.history import write_history_csv
from clf.train.runs import collect_runs, summarize_run

runner = CliRunner()


def make_run(root, name, arch="cnn", accs=(0.5, 0.75, 0.625), seconds=30.0, batch=16, size=64, params=456_789):
    run = root / name
    run.mkdir(parents=True)
    config = {"train": {"arch": arch, "batch_size": batch, "img_size": size, "epochs": len(accs)}, "params": params}
    (run / "config.json").write_text(json.dumps(config))
    rows = [
        {"epoch": i + 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": None if a is None else 1.0, "val_acc": a,
         "lr": 0.001, "seconds": seconds}
        for i, a in enumerate(accs)
    ]
    write_history_csv(rows, run / "history.csv")
    return run


def test_summary_of_one_run(tmp_path):
    run = make_run(tmp_path, "resnet18-128", arch="resnet18", accs=(0.5, 0.875, 0.75), seconds=20.5, size=128)
    s = summarize_run(run)
    assert (s.name, s.arch, s.epochs, s.batch_size, s.img_size) == ("resnet18-128", "resnet18", 3, 16, 128)
    assert s.best_val_acc == 0.875 and s.params == 456_789 and s.seconds == 61.5 and s.path == run


def test_the_best_val_acc_counts_the_ema_weights_where_they_won(tmp_path):
    run = make_run(tmp_path, "ema", accs=(0.5, 0.75))
    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": None, "val_loss": 1.0, "val_acc": 0.5, "ema_val_loss": 0.9,
             "ema_val_acc": 0.625, "lr": 0.001, "seconds": 1.0},
            {"epoch": 2, "train_loss": 1.0, "train_acc": None, "val_loss": 1.0, "val_acc": 0.75, "ema_val_loss": 0.8,
             "ema_val_acc": 0.875, "lr": 0.001, "seconds": 1.0}]
    write_history_csv(rows, run / "history.csv")
    assert summarize_run(run).best_val_acc == 0.875  # what best.pt holds: the EMA weights of epoch 2


def test_no_val_split_and_no_history_yet(tmp_path):
    assert summarize_run(make_run(tmp_path, "full", accs=(None, None))).best_val_acc is None
    fresh = make_run(tmp_path, "fresh")
    (fresh / "history.csv").unlink()  # interrupted in epoch 1: config.json only
    s = summarize_run(fresh)
    assert (s.epochs, s.best_val_acc, s.seconds) == (0, None, 0.0)


def test_collect_sorts_and_skips_unreadable(tmp_path, caplog):
    make_run(tmp_path, "b-run")
    make_run(tmp_path, "a-run")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()
    with caplog.at_level(logging.DEBUG, logger="clf"):
        names = [s.name for s in collect_runs(tmp_path)]
    assert names == ["a-run", "b-run"]
    assert "broken: unreadable run folder" in caplog.text


def test_runs_command_prints_the_table(tmp_path):
    make_run(tmp_path, "cnn-64", accs=(0.5, 0.9375), seconds=45.0, params=460_000)
    make_run(tmp_path, "alex-full", arch="alexnet", accs=(None,) * 4, seconds=1000.0, batch=32, size=96,
             params=57_000_000)
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"training runs in {tmp_path}"
    header = " ".join(line for line in lines if line.startswith("┃"))  # 80 columns: "best val acc" wraps
    for column in ("run", "arch", "epochs", "batch", "img size", "best val", "acc", "params", "time"):
        assert column in header
    cnn = next(line for line in lines if "cnn-64" in line).split("│")
    alex = next(line for line in lines if "alex-full" in line).split("│")
    assert [c.strip() for c in cnn[1:-1]] == ["cnn-64", "cnn", "2", "16", "64", "0.9375", "0.46M", "1m30s"]
    assert [c.strip() for c in alex[1:-1]] == ["alex-full", "alexnet", "4", "32", "96", "", "57.00M", "1h06m"]
    def row_of(name: str) -> int:
        return lines.index(next(x for x in lines if name in x))

    assert row_of("alex-full") < row_of("cnn-64")


def test_runs_command_on_empty_or_missing_folder(tmp_path):
    for folder in (tmp_path, tmp_path / "missing"):
        result = runner.invoke(app, ["runs", str(folder)])
        assert result.exit_code == 2
        assert "no training runs found" in result.output and str(folder) in result.output
        assert "Traceback" not in result.output


def test_a_config_json_that_is_not_a_run_config_is_skipped_with_a_warning(tmp_path):
    make_run(tmp_path, "good")
    for name, text in (("a-list", "[1, 2]"), ("b-null", "null"), ("c-garbage", "{not json"), ("d-no-train", '{"x": 1}'),
                       ("e-train-list", '{"train": []}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
    (tmp_path / "f-latin1").mkdir()
    (tmp_path / "f-latin1" / "config.json").write_bytes(b'{"train": "\xe9"}')
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    for name in ("a-list", "b-null", "c-garbage", "d-no-train", "e-train-list", "f-latin1"):
        assert f"WARNING {tmp_path / name}: unreadable run folder (" in result.output
    assert sum("│ good" in line for line in result.output.splitlines()) == 1


def test_a_refit_is_listed_beneath_its_run_and_a_link_is_not_followed(tmp_path):
    run = make_run(tmp_path, "a", accs=(0.5, 0.75))
    make_run(run, "refit", accs=(None, None, None))
    elsewhere = make_run(tmp_path / "elsewhere", "x")
    make_run(tmp_path, "b")
    (tmp_path / "b" / "refit").symlink_to(elsewhere)
    rows = [(s.name, s.epochs, s.best_val_acc, s.path) for s in collect_runs(tmp_path)]
    assert rows == [("a", 2, 0.75, run), ("a/refit", 3, None, run / "refit"), ("b", 3, 0.75, tmp_path / "b")]


def _chosen_by_metric(run, metric, rows):
    """Rewrite `run` as trained with --metric `metric`, with these history rows."""
    config = json.loads((run / "config.json").read_text())
    config["train"]["metric"] = metric
    (run / "config.json").write_text(json.dumps(config))
    write_history_csv(rows, run / "history.csv")


def test_runs_chosen_by_another_metric_show_its_value(tmp_path):
    """best.pt chosen by --metric log_loss: the accuracy column shows that epoch's accuracy (not the best accuracy),
    and a line under the table says what chose it, with its value for those weights (EMA's here)."""
    run = make_run(tmp_path, "by-loss")
    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": None, "val_loss": 0.9, "val_acc": 0.75, "val_metric": 0.9,
             "ema_val_loss": 0.8, "ema_val_acc": 0.5, "ema_val_metric": 0.8, "lr": 0.001, "seconds": 1.0},
            {"epoch": 2, "train_loss": 1.0, "train_acc": None, "val_loss": 0.7, "val_acc": 0.625, "val_metric": 0.7,
             "ema_val_loss": 0.6, "ema_val_acc": 0.5625, "ema_val_metric": 0.6, "lr": 0.001, "seconds": 1.0}]
    _chosen_by_metric(run, "log_loss", rows)
    summary = summarize_run(run)
    assert (summary.metric, summary.best_metric, summary.best_val_acc) == ("log_loss", 0.6, 0.5625)
    make_run(tmp_path, "by-acc", accs=(0.5, 0.875))
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    by_loss = next(line for line in lines if line.startswith("│ by-loss")).split("│")
    assert by_loss[6].strip() == "0.5625", result.output  # best.pt's epoch and weights, not the best accuracy (0.75)
    assert "by-loss: best.pt chosen by log_loss 0.6000 (lower is better)" in lines, result.output
    assert not [line for line in lines if line.startswith("by-acc:")], result.output  # accuracy: the table says it


def test_an_undefined_metric_is_said_so(tmp_path):
    run = make_run(tmp_path, "auc")
    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": None, "val_loss": 0.9, "val_acc": 0.75,
             "val_metric": float("nan"), "lr": 0.001, "seconds": 1.0}]  # roc_auc without every class in the split
    _chosen_by_metric(run, "roc_auc", rows)
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert "auc: best.pt chosen by roc_auc n/a" in result.output.splitlines(), result.output


def test_accuracy_runs_get_no_metric_line(tmp_path):
    make_run(tmp_path, "plain")
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0 and "chosen by" not in result.output
