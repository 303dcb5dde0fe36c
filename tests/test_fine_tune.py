"""Fine-tuning through clf.train.fit: --pretrained-path from an earlier clf run or a plain state dict, the head
re-initialised for another class count, --freeze-epochs keeping the body exact, and resume bit-exact across the
unfreeze (never reading the weights file again).

Every run is the 32 px cnn on the tiny sample competition on the CPU (train_helpers.TINY).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import assert_same_weights, interrupt_in_epoch, load, make_data, resume, train, without_seconds

from clf.train import trainer as trainer_module

HEAD = "head.2."  # the cnn's classifier (clf.models.layers.classifier_prefixes)
THREE = ("circle", "square", "star")


@pytest.fixture(scope="module")
def data4(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("four"))


@pytest.fixture(scope="module")
def data3(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("three"), classes=THREE)


@pytest.fixture(scope="module")
def base(data4, tmp_path_factory) -> Path:
    """An earlier clf run on 4 classes: the weights fine-tuning starts from."""
    return train(data4, tmp_path_factory.mktemp("base"), "base", epochs=1).run_dir


def body(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(HEAD)}


def record_epoch_starts(monkeypatch) -> list[dict]:
    """The model's state dict as each epoch starts (before its first optimizer step)."""
    real, seen = trainer_module.train_one_epoch, []

    def train_one_epoch(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_one_epoch", train_one_epoch)
    return seen


def test_fine_tuning_a_clf_run_on_other_classes_starts_from_its_body(base, data3, tmp_path, monkeypatch):
    starts = record_epoch_starts(monkeypatch)
    run = train(data3, tmp_path, "ft", epochs=1, pretrained_path=str(base / "best.pt")).run_dir
    source = load(base / "best.pt")["model"]
    first = starts[0]
    assert_same_weights(body(first), body(source))
    assert first[HEAD + "weight"].shape[0] == 3 and source[HEAD + "weight"].shape[0] == 4  # a new head
    sha = hashlib.sha256((base / "best.pt").read_bytes()).hexdigest()
    for config in (json.loads((run / "config.json").read_text())["train"], load(run / "last.pt")["config"]):
        assert (config["pretrained_path"], config["pretrained_sha256"]) == (str(base / "best.pt"), sha)


def test_a_plain_state_dict_of_the_same_classes_keeps_the_head_too(base, data4, tmp_path, monkeypatch):
    torch.save({"state_dict": load(base / "best.pt")["model"]}, tmp_path / "weights.pth")
    starts = record_epoch_starts(monkeypatch)
    train(data4, tmp_path, "ft", epochs=1, pretrained_path=str(tmp_path / "weights.pth"))
    assert_same_weights(starts[0], load(base / "best.pt")["model"])


def test_frozen_epochs_leave_the_body_exact_then_it_trains(base, data3, tmp_path, monkeypatch):
    """Weights and BatchNorm statistics alike: the body of the file until the unfreeze, then it moves."""
    starts = record_epoch_starts(monkeypatch)
    run = train(data3, tmp_path, "ft", epochs=3, freeze_epochs=2, pretrained_path=str(base / "best.pt")).run_dir
    source = body(load(base / "best.pt")["model"])
    after_frozen = starts[2]  # the start of epoch 3 = the end of the 2 frozen epochs
    assert_same_weights(body(after_frozen), source)
    assert not torch.equal(after_frozen[HEAD + "weight"], starts[0][HEAD + "weight"])  # the head trained
    final = body(load(run / "last.pt")["model"])
    moved = [k for k in source if not torch.equal(final[k], source[k])]
    assert any(k.endswith(".weight") for k in moved) and any(k.endswith("running_mean") for k in moved)
    lrs = [row["lr"] for row in load(run / "last.pt")["history"]]
    assert lrs[0] == 3e-3  # the history shows the head's LR, not the frozen body's 0


def assert_same_run(a: Path, b: Path) -> None:
    last_a, last_b = load(a / "last.pt"), load(b / "last.pt")
    assert_same_weights(last_a["model"], last_b["model"])
    for state_a, state_b in zip(last_a["optimizer"]["state"].values(), last_b["optimizer"]["state"].values()):
        assert_same_weights(state_a, state_b)
    groups = [[g["lr"] for g in last["optimizer"]["param_groups"]] for last in (last_a, last_b)]
    assert groups[0] == groups[1] and len(set(groups[0])) > 1  # the per-layer LRs, restored exactly
    assert last_a["scheduler"] == last_b["scheduler"]
    assert torch.equal(last_a["rng"]["torch"], last_b["rng"]["torch"])
    assert without_seconds(last_a["history"]) == without_seconds(last_b["history"])


@pytest.fixture(scope="module")
def straight(base, data3, tmp_path_factory) -> Path:
    """3 uninterrupted epochs: 1 frozen, then everything, with layer decay and a warm-up."""
    out = tmp_path_factory.mktemp("straight")
    weights = out / "weights.pt"
    shutil.copy(base / "best.pt", weights)
    return train(data3, out, "straight", epochs=3, freeze_epochs=1, layer_decay=0.5, warmup_epochs=1,
                 pretrained_path=str(weights)).run_dir


@pytest.mark.parametrize("cut", [2, 3], ids=["resumed-at-the-unfreeze", "resumed-after-it"])
def test_resume_across_the_unfreeze_is_exact_and_never_reads_the_file(cut, straight, data3, tmp_path, monkeypatch):
    weights = tmp_path / "weights.pt"
    shutil.copy(straight.parent / "weights.pt", weights)
    options = {"epochs": 3, "freeze_epochs": 1, "layer_decay": 0.5, "warmup_epochs": 1, "pretrained_path": str(weights)}
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch=cut)
        with pytest.raises(KeyboardInterrupt):
            train(data3, tmp_path, "parts", **options)
    assert load(tmp_path / "parts" / "last.pt")["epoch"] == cut - 1
    weights.unlink()  # the run's own last.pt holds the weights it continues from
    resume(tmp_path / "parts")
    assert_same_run(straight, tmp_path / "parts")
