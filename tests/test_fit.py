"""clf.train.fit: exact resume, history continuity, checkpoint contract, best/last, early stop, atomic saves.

Every run is the 32 px cnn on 40 training images (5 batches of 8) on the CPU with --workers 0, where
resuming is bit-exact: model, optimizer, scheduler and torch RNG state (shuffling, augmentation, dropout)
all come back from last.pt.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from train_helpers import (
    TINY,
    assert_same_weights,
    interrupt_in_epoch,
    load,
    make_data,
    resume,
    train,
    without_seconds,
)

from clf.config import TrainConfig
from clf.errors import IncompleteError, StorageError, Terminated
from clf.models.checkpoint import CHECKPOINT_VERSION
from clf.models.checkpoint_load import model_from_checkpoint
from clf.models.cnn import CNN_DESIGN
from clf.train import trainer as trainer_module
from clf.train.history import read_history_csv
from clf.train.loop import EpochMetrics
from clf.train.schedule import lr_factor

# "on": the default preset plus a rotation (every stream of the pipeline exercised across a resume)
AUG = {"off": dict(augment="none"), "on": dict(augment="default", rotate=10.0)}
CONTRACT_KEYS = {"format", "version", "clf_version", "arch", "model_kwargs", "img_size", "classes", "preprocess",
                 "config", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "history", "best_val_acc",
                 "run_name", "params", "augment", "weights", "ema", "ema_updates"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """4 uninterrupted epochs (cosine with 1 warmup epoch) per augmentation setting, trained once per module."""
    out = tmp_path_factory.mktemp("straight")
    done: dict[str, Path] = {}

    def get(aug: str) -> Path:
        if aug not in done:
            done[aug] = train(data, out, f"straight-{aug}", epochs=4, warmup_epochs=1, **AUG[aug]).run_dir
        return done[aug]

    return get


def assert_same_run(a: Path, b: Path) -> None:
    last_a, last_b = load(a / "last.pt"), load(b / "last.pt")
    assert_same_weights(last_a["model"], last_b["model"])
    for state_a, state_b in zip(last_a["optimizer"]["state"].values(), last_b["optimizer"]["state"].values()):
        assert_same_weights(state_a, state_b)
    assert last_a["scheduler"]["last_epoch"] == last_b["scheduler"]["last_epoch"]
    assert torch.equal(last_a["rng"]["torch"], last_b["rng"]["torch"])
    assert without_seconds(last_a["history"]) == without_seconds(last_b["history"])
    assert without_seconds(read_history_csv(a / "history.csv")) == without_seconds(read_history_csv(b / "history.csv"))
    assert load(a / "best.pt")["epoch"] == load(b / "best.pt")["epoch"]


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("aug", ["off", "on"])
def test_interrupted_then_resumed_equals_uninterrupted(aug, data, straight, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=3)
        with pytest.raises(KeyboardInterrupt):
            train(data, tmp_path, "parts", epochs=4, warmup_epochs=1, **AUG[aug])
    run = tmp_path / "parts"
    assert load(run / "last.pt")["epoch"] == 2  # epoch 3 was cut short: last.pt still holds epoch 2
    assert [r["epoch"] for r in read_history_csv(run / "history.csv")] == [1, 2]

    result = resume(run)
    assert (result.run_dir, result.epochs_done) == (run, 4)
    assert_same_run(straight(aug), run)


def test_resume_is_exact_with_a_worker_process_too(data, tmp_path, monkeypatch):
    """Workers restart each epoch seeded from the saved main RNG, so augmentation in them resumes exactly."""
    worker = dict(workers=1, epochs=3, **AUG["on"])
    train(data, tmp_path, "straight", **worker)
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=3)
        with pytest.raises(KeyboardInterrupt):
            train(data, tmp_path, "parts", **worker)
    resume(tmp_path / "parts", workers=1)
    assert_same_run(tmp_path / "straight", tmp_path / "parts")


@pytest.mark.parametrize("aug", ["off", "on"])
def test_raising_epochs_on_resume_equals_one_long_run(aug, data, tmp_path):
    """--epochs 2, then --resume --epochs 4: with a flat schedule the first two epochs are the same as a 4-epoch
    run's (no warm-up: the default's 30 % of 4 epochs would not be 30 % of 2)."""
    flat = dict(scheduler="none", warmup_epochs=0, **AUG[aug])
    train(data, tmp_path, "long", epochs=4, **flat)
    train(data, tmp_path, "parts", epochs=2, **flat)
    assert load(tmp_path / "parts" / "last.pt")["epoch"] == 2
    resume(tmp_path / "parts", epochs=4)
    assert_same_run(tmp_path / "long", tmp_path / "parts")


def test_a_checkpoint_from_before_presets_resumes_with_its_own_augmentation(data, tmp_path):
    """Version 1 checkpoints have no "augment": their flip/rotate flags are the whole pipeline, whatever the new
    default."""
    run = train(data, tmp_path, "old", epochs=1, hflip=0.5).run_dir
    ckpt = load(run / "last.pt")
    legacy_config = {k: v for k, v in ckpt["config"].items() if k in ("data", "arch", "epochs", "img_size", "hflip",
                                                                      "rotate", "seed", "lr", "batch_size")}
    torch.save({**{k: v for k, v in ckpt.items() if k != "augment"}, "version": 1, "config": legacy_config},
               run / "last.pt")
    resume(run, epochs=2)
    resumed = load(run / "last.pt")
    assert resumed["config"]["augment"] == "none"
    assert resumed["augment"] == [{"op": "hflip", "p": 0.5}]


def test_the_auto_batch_size_is_what_the_run_records(data, tmp_path):
    run = train(data, tmp_path, "auto", epochs=1, batch_size=None).run_dir  # 40 training images
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 8
    assert load(run / "last.pt")["config"]["batch_size"] == 8
    assert load(run / "last.pt")["scheduler"]["last_epoch"] == 5  # 40 // 8 steps


def test_history_continues_across_resume(data, tmp_path):
    run = train(data, tmp_path, "parts", epochs=1).run_dir
    resume(run, epochs=2)
    resume(run, epochs=3)
    rows = read_history_csv(run / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["sitting"] for r in rows] == [1, 2, 3]  # each resume is a sitting of its own (the report marks them)
    assert [r["epoch"] for r in load(run / "last.pt")["history"]] == [1, 2, 3]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 3  # the resolved config follows the raised --epochs
    assert load(run / "last.pt")["config"]["epochs"] == 3


def test_raised_epochs_follow_the_longer_schedule(data, tmp_path):
    """The resumed epoch trains with the new schedule's LR, not the finished one's (cosine floor) from last.pt."""
    run = train(data, tmp_path, "cos", epochs=1, scheduler="cosine").run_dir
    assert load(run / "last.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(TINY["lr"] * 0.01)
    resume(run, epochs=2)
    rows = load(run / "last.pt")["history"]
    steps = 5  # 40 images / batch 8
    longer = TrainConfig(data="x", epochs=2, scheduler="cosine")
    assert rows[1]["lr"] == TINY["lr"] * lr_factor(steps, steps, longer)  # 0.505 x base, not 0.01 x base


# ---------------------------------------------------------------- checkpoints


def test_checkpoints_hold_the_contract_and_load_weights_only(data, straight):
    run = straight("on")
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)
        assert ckpt.keys() == CONTRACT_KEYS  # the documented schema, nothing else
        assert ckpt["version"] == CHECKPOINT_VERSION
        assert ckpt["params"] == json.loads((run / "config.json").read_text())["params"]
        assert ckpt["format"] == "clf-checkpoint" and ckpt["arch"] == "cnn"
        assert ckpt["classes"] == ["circle", "square", "star", "triangle"]
        assert ckpt["model_kwargs"]["num_classes"] == 4
        assert ckpt["preprocess"]["size"] in ([32, 32], (32, 32))
        assert ckpt["config"]["epochs"] == 4 and ckpt["config"]["augment"] == "default"
        assert ckpt["augment"] == json.loads((run / "config.json").read_text())["augment"]
        assert {"op": "rotate", "max_degrees": 10.0} in ckpt["augment"]
        assert ckpt["run_name"] == "straight-on"
        assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
        assert [r["epoch"] for r in ckpt["history"]] == list(range(1, ckpt["epoch"] + 1))
        model = model_from_checkpoint(ckpt)
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert load(run / "last.pt")["epoch"] == 4
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_best_checkpoint_is_the_best_val_epoch(straight):
    run = straight("on")
    rows = read_history_csv(run / "history.csv")
    best_acc = max(r["val_acc"] for r in rows)
    best_loss = min(r["val_loss"] for r in rows if r["val_acc"] == best_acc)  # the key: accuracy, then loss
    best_epoch = next(r["epoch"] for r in rows if (r["val_acc"], r["val_loss"]) == (best_acc, best_loss))
    best = load(run / "best.pt")
    assert best["epoch"] == best_epoch and best["best_val_acc"] == best_acc
    assert load(run / "last.pt")["best_val_acc"] == best_acc


@pytest.fixture
def scripted_val(monkeypatch):
    """Replace evaluate() by a scripted val accuracy per epoch; remember the weights each epoch ended with."""
    weights: list[dict[str, torch.Tensor]] = []

    def script(accuracies):
        def evaluate(model, loader, criterion, runtime):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            return EpochMetrics(loss=1.0, accuracy=accuracies[len(weights) - 1], images=8, seconds=0.0)

        monkeypatch.setattr(trainer_module, "evaluate", evaluate)
        return weights

    return script


@pytest.fixture
def scripted_val_loss(monkeypatch):
    """evaluate() scripted per call as (val accuracy, val loss); the weights of each call kept."""
    weights: list[dict[str, torch.Tensor]] = []

    def script(results):
        def evaluate(model, loader, criterion, runtime):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            acc, loss = results[len(weights) - 1]
            return EpochMetrics(loss=loss, accuracy=acc, images=8, seconds=0.0)

        monkeypatch.setattr(trainer_module, "evaluate", evaluate)
        return weights

    return script


def test_a_tie_on_accuracy_goes_to_the_later_epoch_with_the_lower_loss(data, tmp_path, scripted_val_loss, caplog):
    weights = scripted_val_loss([(0.5, 0.9), (1.0, 0.5), (1.0, 0.2), (1.0, 0.3)])
    with caplog.at_level(logging.DEBUG, logger="clf"):
        result = train(data, tmp_path, "tie", epochs=4)
    best = load(result.run_dir / "best.pt")
    assert (best["epoch"], best["best_val_acc"], result.best_val_acc) == (3, 1.0, 1.0)
    assert_same_weights(best["model"], weights[2])
    assert load(result.run_dir / "last.pt")["best_val_acc"] == 1.0
    notes = [r for r in caplog.records if r.getMessage().startswith("val accuracy 1.00")]
    expected = ("val accuracy 1.00 since epoch 2: validation can no longer rank checkpoints; best.pt chosen by "
                "val loss (epoch 3, raw weights)")
    assert [(r.levelname, r.getMessage()) for r in notes] == [("WARNING", expected)]  # once, at the end


def test_a_resumed_run_ranks_its_new_epochs_against_the_whole_history_by_the_key(data, tmp_path, scripted_val_loss):
    """The history in last.pt carries val_loss (every checkpoint's does): the resumed epoch 3 (1.0, 0.4) does not
    beat epoch 2 (1.0, 0.3), though it beats epoch 1 (1.0, 0.5)."""
    weights = scripted_val_loss([(1.0, 0.5), (1.0, 0.3), (1.0, 0.4)])
    run = train(data, tmp_path, "resumed-key", epochs=2).run_dir
    resume(run, epochs=3)
    best = load(run / "best.pt")
    assert (best["epoch"], load(run / "last.pt")["epoch"]) == (2, 3)
    assert_same_weights(best["model"], weights[1])


def test_patience_counts_from_the_best_epoch_by_the_key(data, tmp_path, scripted_val_loss):
    """Saturated accuracy with a falling loss is progress: no early stop until the loss stops falling too."""
    scripted_val_loss([(1.0, 0.5), (1.0, 0.4), (1.0, 0.3), (1.0, 0.35), (1.0, 0.36), (1.0, 0.1)])
    result = train(data, tmp_path, "es-key", epochs=6, patience=2)
    assert (result.epochs_done, result.stopped_early) == (5, True)
    assert load(result.run_dir / "best.pt")["epoch"] == 3


def test_ema_weights_win_an_accuracy_tie_on_a_lower_loss(data, tmp_path, scripted_val_loss):
    weights = scripted_val_loss([(0.75, 0.5), (0.75, 0.25), (0.75, 0.4), (0.75, 0.45)])  # (raw, EMA) per epoch
    run = train(data, tmp_path, "ema-loss", epochs=2, ema=0.9).run_dir
    best = load(run / "best.pt")
    assert (best["epoch"], best["weights"]) == (1, "ema")  # epoch 2's raw weights (0.4) lose to epoch 1's EMA (0.25)
    assert_same_weights(best["model"], weights[1])


def test_best_and_last_hold_their_own_epochs(data, tmp_path, scripted_val):
    weights = scripted_val([0.25, 0.75, 0.5, 0.5])
    result = train(data, tmp_path, "bl", epochs=4)
    run = result.run_dir
    assert (result.epochs_done, result.best_val_acc, result.stopped_early) == (4, 0.75, False)
    best, last = load(run / "best.pt"), load(run / "last.pt")
    assert (best["epoch"], last["epoch"]) == (2, 4)
    assert_same_weights(best["model"], weights[1])
    assert_same_weights(last["model"], weights[3])


@pytest.mark.parametrize(
    "accuracies, patience, stopped_after, best_epoch",
    [
        ([0.25, 0.75, 0.5, 0.5, 0.9, 0.9], 2, 4, 2),  # no gain in epochs 3 and 4
        ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 2, 3, 1),  # a tie is no gain: the first epoch stays best
        ([0.1, 0.2, 0.3, 0.4], 1, None, 4),  # always improving: runs to --epochs
    ],
)
def test_early_stopping(accuracies, patience, stopped_after, best_epoch, data, tmp_path, scripted_val):
    scripted_val(accuracies)
    epochs = len(accuracies)
    result = train(data, tmp_path, "es", epochs=epochs, patience=patience)
    done = stopped_after or epochs
    assert (result.epochs_done, result.stopped_early) == (done, stopped_after is not None)
    assert [r["epoch"] for r in read_history_csv(result.run_dir / "history.csv")] == list(range(1, done + 1))
    assert load(result.run_dir / "best.pt")["epoch"] == best_epoch
    assert load(result.run_dir / "last.pt")["epoch"] == done


@pytest.fixture
def drawn_curves(monkeypatch):
    """The epochs each curves.png drawing showed (the drawing itself still happens)."""
    shown: list[int] = []
    real = trainer_module.plot_curves

    def plot(rows, path, title=""):
        shown.append(rows[-1]["epoch"])
        real(rows, path, title)

    monkeypatch.setattr(trainer_module, "plot_curves", plot)
    return shown


def test_curves_are_drawn_after_the_first_and_last_epoch_then_at_most_every_interval(data, tmp_path, drawn_curves,
                                                                                      monkeypatch):
    monkeypatch.setattr(trainer_module, "CURVES_INTERVAL_S", 1e9)
    result = train(data, tmp_path, "slow-curves", epochs=4)
    assert drawn_curves == [1, 4]
    assert (result.run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setattr(trainer_module, "CURVES_INTERVAL_S", 0.0)
    drawn_curves.clear()
    train(data, tmp_path, "every-epoch", epochs=3)
    assert drawn_curves == [1, 2, 3]


def test_an_early_stopped_run_draws_its_last_epoch(data, tmp_path, scripted_val, drawn_curves, monkeypatch):
    monkeypatch.setattr(trainer_module, "CURVES_INTERVAL_S", 1e9)
    scripted_val([0.5, 0.4, 0.4, 0.4, 0.4, 0.4])
    result = train(data, tmp_path, "es-curves", epochs=6, patience=2)
    assert result.stopped_early and drawn_curves == [1, 3]


def test_early_stopping_for_real_with_lr_zero(data, tmp_path):
    """No scripting: with --lr 0 and no augmentation the weights never change, so val accuracy never improves."""
    result = train(data, tmp_path, "frozen", epochs=6, patience=2, lr=0.0, hflip=0.0, rotate=0.0, scheduler="none")
    assert result.stopped_early and result.epochs_done < 6


def test_no_val_best_is_last(data, tmp_path):
    result = train(data, tmp_path, "full", epochs=2, val_split=0.0)
    run = result.run_dir
    assert result.best_val_acc is None
    best, last = load(run / "best.pt"), load(run / "last.pt")
    assert best["epoch"] == last["epoch"] == 2
    assert_same_weights(best["model"], last["model"])
    rows = read_history_csv(run / "history.csv")
    assert [(r["val_loss"], r["val_acc"]) for r in rows] == [(None, None)] * 2


# ---------------------------------------------------------------- crashes


def test_crash_while_saving_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def crashing_save(obj, f, *args, **kwargs):
        saves.append(obj["epoch"])
        if obj["epoch"] == 2:
            f.write(b"PK\x03\x04 half a zip")  # the process dies mid-write
            raise OSError("No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(StorageError, match=r"crash/last.pt: disk full \(.* free\)"):
        train(data, tmp_path, "crash", epochs=3)
    run = tmp_path / "crash"
    assert saves == [1, 2]
    assert load(run / "last.pt")["epoch"] == 1
    assert load(run / "best.pt")["epoch"] == 1
    assert sorted(p.name for p in run.iterdir()) == [
        ".clf-folder.json", "best.pt", "config.json", "curves.png", "history.csv", "last.pt", "split.json"]


@pytest.fixture
def signal_handlers():
    """Put SIGINT's and SIGTERM's handlers back as the test process had them (SIG_IGN in a background job)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_while_saving_waits_for_the_save(signum, raised, signal_handlers):
    def handler(received, frame):
        raise AssertionError("the handler must not run during the save")

    signal.signal(signum, handler)
    done = []
    with pytest.raises(raised), trainer_module.interrupts_deferred():
        os.kill(os.getpid(), signum)
        done.append("checkpoint written")
    assert done == ["checkpoint written"]
    assert signal.getsignal(signum) is handler  # exactly what was there before


def test_an_ignored_signal_stays_ignored_while_saving(signal_handlers):
    """A background job inherits SIGINT as SIG_IGN: the save neither raises for it nor installs a handler for good."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with trainer_module.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_what_was_installed_before_is_restored(signal_handlers):
    """Whatever the suite was started with (default handler, or SIG_IGN from `make test </dev/null &`) comes back."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with trainer_module.interrupts_deferred():
        pass
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_interrupt_in_first_epoch_leaves_nothing_to_resume(data, tmp_path, monkeypatch, caplog):
    interrupt_in_epoch(monkeypatch, epoch=1, after_batches=1)
    with caplog.at_level(logging.DEBUG, logger="clf"), pytest.raises(KeyboardInterrupt):
        train(data, tmp_path, "early", epochs=2)
    assert not (tmp_path / "early" / "last.pt").exists()
    assert (f"interrupted during epoch 1: no finished epoch to resume in {tmp_path / 'early'}; "
            "start it again with --overwrite") in caplog.text


def test_a_diverging_loss_stops_before_it_is_saved(data, tmp_path, monkeypatch):
    real = trainer_module.evaluate
    calls = []

    def evaluate(model, loader, criterion, runtime):
        calls.append(1)
        metrics = real(model, loader, criterion, runtime)
        return EpochMetrics(float("nan") if len(calls) == 2 else metrics.loss, metrics.accuracy, metrics.images, 0.0)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    run = tmp_path / "nan"
    with pytest.raises(IncompleteError) as error:
        train(data, tmp_path, "nan", epochs=3)
    assert str(error.value) == (f"{run}: validation loss became nan in epoch 2; {run / 'last.pt'} keeps epoch 1; "
                                "try a lower --lr")
    assert error.value.exit_code == 4
    assert load(run / "last.pt")["epoch"] == load(run / "best.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_history_csv(run / "history.csv")] == [1]


def test_a_huge_lr_diverges_in_the_first_epoch(data, tmp_path):
    with pytest.raises(IncompleteError, match=r"training loss became (nan|inf) in epoch 1; no epoch was saved; "
                                              r"try a lower --lr$"):
        train(data, tmp_path, "huge", epochs=2, lr=1e30, optimizer="sgd")
    assert not (tmp_path / "huge" / "last.pt").exists() and not (tmp_path / "huge" / "best.pt").exists()


# ---------------------------------------------------------------- the run folder


def test_split_json_lists_the_images_of_each_part(data, straight):
    run = straight("on")
    split = json.loads((run / "split.json").read_text())
    assert split.keys() == {"format", "root", "val", "train"} and split["format"] == 1
    assert split["root"] == str(data.resolve())
    assert len(split["val"]) == 8 and len(split["train"]) == 40
    assert not set(split["val"]) & set(split["train"])
    assert all((data / p).is_file() and "/" in p and not p.startswith("/") for p in split["val"] + split["train"])
    assert split["val"][0].split("/")[0] == "circle"  # class folder / file, validation order


def test_unreadable_images_are_not_in_split_json(tmp_path):
    data = make_data(tmp_path / "sample")
    broken = data / "star" / "broken.png"
    broken.write_bytes(b"not a png")
    run = train(data, tmp_path / "runs", "r", epochs=1).run_dir
    split = json.loads((run / "split.json").read_text())
    assert "star/broken.png" not in split["val"] + split["train"]
    assert len(split["val"]) + len(split["train"]) == 48


def test_resume_rewrites_split_json_when_the_data_moved(tmp_path):
    data = make_data(tmp_path / "sample")
    run = train(data, tmp_path / "runs", "r", epochs=1).run_dir
    before = json.loads((run / "split.json").read_text())
    moved = tmp_path / "moved"
    data.rename(moved)
    resume(run, data=str(moved), epochs=2)
    after = json.loads((run / "split.json").read_text())
    assert after["root"] == str(moved.resolve()) and (after["val"], after["train"]) == (before["val"], before["train"])


# ---------------------------------------------------------------- options


def test_history_lr_follows_the_schedule(data, tmp_path):
    """SGD, step decay after a warmup epoch, label smoothing: the logged LR is the one each epoch started with."""
    options = dict(epochs=4, optimizer="sgd", scheduler="step", warmup_epochs=1, label_smoothing=0.1, lr=0.01)
    run = train(data, tmp_path, "sgd", **options).run_dir
    ckpt = load(run / "last.pt")
    cfg = TrainConfig(data="x", **options)
    steps = 5  # 40 images / batch 8
    expected = [0.01 * lr_factor(e * steps, steps, cfg) for e in range(4)]
    assert [r["lr"] for r in ckpt["history"]] == pytest.approx(expected)
    assert [r["lr"] for r in ckpt["history"]] == pytest.approx([0.01 / 5, 0.01, 0.001, 0.0001])
    assert ckpt["config"]["optimizer"] == "sgd" and ckpt["config"]["label_smoothing"] == 0.1
    assert "momentum_buffer" in next(iter(ckpt["optimizer"]["state"].values()))
    assert ckpt["scheduler"]["last_epoch"] == 4 * steps


def test_cache_images_trains_the_same(data, tmp_path, caplog):
    """Cached decoded images, augmentation still drawn per epoch: the same weights as reading the files each time.

    Unset, --cache-images is auto: these few small images are cached (and the run says so).
    """
    plain = train(data, tmp_path, "files", epochs=2, cache_images=False, **AUG["on"]).run_dir
    cached = train(data, tmp_path, "cached", epochs=2, cache_images=True, **AUG["on"]).run_dir
    with caplog.at_level(logging.INFO, logger="clf.train.build"):
        auto = train(data, tmp_path, "auto", epochs=2, **AUG["on"]).run_dir
    assert "images cached in RAM (0 MB of " in caplog.text
    assert json.loads((auto / "config.json").read_text())["train"]["cache_images"] is None  # auto again on resume
    for run in (cached, auto):
        assert_same_weights(load(plain / "last.pt")["model"], load(run / "last.pt")["model"])


# ---------------------------------------------------------------- mixup / CutMix, EMA, dropout

MIXED_EMA = dict(mixup=0.4, cutmix=1.0, mix_prob=0.8, ema=0.9, **AUG["on"])


def test_resume_is_exact_with_mixup_cutmix_and_ema(data, tmp_path, monkeypatch):
    """Mix draws come from the saved torch generator, the EMA weights and update count from last.pt."""
    options = dict(epochs=3, warmup_epochs=1, **MIXED_EMA)
    straight = train(data, tmp_path, "straight", **options).run_dir
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=3)
        with pytest.raises(KeyboardInterrupt):
            train(data, tmp_path, "parts", **options)
    parts = tmp_path / "parts"
    assert load(parts / "last.pt")["ema_updates"] == 10  # 2 epochs of 5 steps
    resume(parts)
    assert_same_run(straight, parts)
    last_a, last_b = load(straight / "last.pt"), load(parts / "last.pt")
    assert last_a["ema_updates"] == last_b["ema_updates"] == 15 and last_a["weights"] == "raw"
    assert_same_weights(last_a["ema"], last_b["ema"])
    assert load(straight / "best.pt")["weights"] == load(parts / "best.pt")["weights"]
    rows = last_a["history"]
    assert all(r["train_acc"] is None and r["ema_val_acc"] is not None and r["ema_val_loss"] > 0 for r in rows)
    csv_rows = read_history_csv(straight / "history.csv")
    assert [r["train_acc"] for r in csv_rows] == [None] * 3
    assert [r["ema_val_acc"] for r in csv_rows] == [r["ema_val_acc"] for r in rows]


@pytest.fixture
def scripted_raw_and_ema(monkeypatch):
    """evaluate() scripted per epoch as (raw, EMA) val accuracies; the weights of each call kept (raw, EMA, ...)."""
    weights: list[dict[str, torch.Tensor]] = []

    def script(pairs):
        accuracies = [acc for pair in pairs for acc in pair]

        def evaluate(model, loader, criterion, runtime):
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            return EpochMetrics(loss=1.0, accuracy=accuracies[len(weights) - 1], images=8, seconds=0.0)

        monkeypatch.setattr(trainer_module, "evaluate", evaluate)
        return weights

    return script


@pytest.mark.parametrize("pairs, best_epoch, winner", [
    ([(0.25, 0.5), (0.75, 0.5), (0.5, 1.0)], 3, "ema"),
    ([(0.25, 0.5), (0.75, 0.5), (0.5, 0.75)], 2, "raw"),  # a tie does not replace the best epoch
    ([(0.5, 0.5)], 1, "raw"),  # equal: the raw weights
])
def test_best_is_the_better_of_raw_and_ema_and_says_which(pairs, best_epoch, winner, data, tmp_path,
                                                          scripted_raw_and_ema):
    weights = scripted_raw_and_ema(pairs)
    result = train(data, tmp_path, "ema", epochs=len(pairs), ema=0.9)
    run = result.run_dir
    assert result.best_val_acc == max(max(pair) for pair in pairs)
    best, last = load(run / "best.pt"), load(run / "last.pt")
    assert (best["epoch"], best["weights"], last["weights"]) == (best_epoch, winner, "raw")
    index = 2 * (best_epoch - 1) + (1 if winner == "ema" else 0)
    assert_same_weights(best["model"], weights[index])
    assert_same_weights(best["ema"], weights[2 * best_epoch - 1])
    assert_same_weights(last["model"], weights[-2])  # the raw weights of the last epoch
    assert_same_weights(last["ema"], weights[-1])
    rows = read_history_csv(run / "history.csv")
    assert [(r["val_acc"], r["ema_val_acc"]) for r in rows] == pairs


def test_without_validation_best_holds_the_ema_weights(data, tmp_path):
    run = train(data, tmp_path, "full", epochs=1, val_split=0.0, ema=0.9).run_dir
    best, last = load(run / "best.pt"), load(run / "last.pt")
    assert best["weights"] == "ema" and best["ema_updates"] == last["ema_updates"] == 6  # 48 images / batch 8
    assert_same_weights(best["model"], last["ema"])
    assert not any(torch.equal(best["model"][k], last["model"][k]) for k in last["model"] if k.endswith("weight"))
    assert load(run / "best.pt")["ema"] is not None
    assert read_history_csv(run / "history.csv")[0]["ema_val_acc"] is None


def test_ema_off_leaves_the_keys_empty(straight):
    for name in ("best.pt", "last.pt"):
        ckpt = load(straight("off") / name)
        assert (ckpt["weights"], ckpt["ema"], ckpt["ema_updates"]) == ("raw", None, None)
        assert all(r["ema_val_acc"] is None and r["train_acc"] is not None for r in ckpt["history"])


def test_dropout_reaches_the_model_and_its_rebuild(data, tmp_path):
    run = train(data, tmp_path, "drop", epochs=1, dropout=0.125).run_dir
    ckpt = load(run / "best.pt")
    assert ckpt["model_kwargs"] == {"num_classes": 4, **CNN_DESIGN, "dropout": 0.125}
    model = model_from_checkpoint(ckpt)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.125]


def test_the_epoch_line_shows_no_train_accuracy_under_mixup_and_the_ema_columns(data, tmp_path):
    from cli_helpers import clf

    result = clf("train", data, "--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0",
                 "--device", "cpu", "--epochs", "1", "--mixup", "0.2", "--ema", "0.9", "--out", tmp_path, "--name", "m")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("epoch   1/1"))
    assert " acc -  val loss " in line and "  ema loss " in line and "best" in line


def test_a_run_of_the_first_cnn_design_resumes_and_exports(tmp_path, monkeypatch):
    """A run trained before checkpoints recorded the cnn's design (version 2) resumes with that design."""
    from clf.config import ExportConfig  # noqa: PLC0415 -- only this test exports
    from clf.export.onnx_export import export_onnx  # noqa: PLC0415
    from clf.models import registry  # noqa: PLC0415
    from clf.models.cnn import CNN_DESIGN_V1  # noqa: PLC0415

    data = make_data(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(registry, "CNN_DESIGN", CNN_DESIGN_V1)
        train(data, tmp_path / "runs", "old", epochs=1)
    run = tmp_path / "runs" / "old"
    for name in ("last.pt", "best.pt"):  # rewrite both as the older clf wrote them
        ckpt = load(run / name)
        ckpt["version"] = 2
        ckpt["model_kwargs"] = {"num_classes": ckpt["model_kwargs"]["num_classes"]}
        torch.save(ckpt, run / name)

    result = resume(run, epochs=2)
    assert result.epochs_done == 2
    last = load(run / "last.pt")
    assert last["version"] == CHECKPOINT_VERSION and last["epoch"] == 2
    assert last["model_kwargs"] == {"num_classes": 4, **CNN_DESIGN_V1}
    assert "head.4.weight" in last["model"]  # the two dense layers of the first design
    export_onnx(ExportConfig(checkpoint=str(run)))
    assert (run / "model.onnx").is_file()


def test_ctrl_c_in_a_finaliser_during_teardown_is_not_lost(data, tmp_path, monkeypatch, signal_handlers):
    """Issue 24: a Ctrl-C landing in a weakref callback (torch's WeakKeyDictionary) while fit's teardown collects
    garbage was printed as "Exception ignored ... KeyboardInterrupt" and lost (a fold group went on training)."""
    import gc
    import weakref

    from clf.train import fit as fit_module

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal gives it (a background job: SIG_IGN)
    real_collect = gc.collect
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)

    def collect(*args):
        class Dying:
            pass

        dying = Dying()
        ref = weakref.ref(dying, lambda _: os.kill(os.getpid(), signal.SIGINT))  # the signal lands in the callback
        del dying
        assert ref() is None
        return real_collect(*args)

    monkeypatch.setattr(fit_module.gc, "collect", collect)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path, "late", epochs=1)
    assert unraisable == []
    assert load(tmp_path / "late" / "last.pt")["epoch"] == 1  # the epoch finished and was saved before
