"""Checkpoints: weights_only round trip, atomic save, plain-data conversion, every load error, model rebuild."""

import enum
import errno
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_factory import checkpoint_state
from torch import nn

import clf
from clf.config import Preprocess, TrainConfig
from clf.errors import ModelError, StorageError
from clf.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    SOURCE_KEY,
    build_checkpoint,
    save_checkpoint,
    to_plain,
)
from clf.models.checkpoint_load import (
    load_checkpoint,
    model_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)
from clf.models.cnn import CNN_DESIGN, CNN_DESIGN_V1, SimpleCNN
from clf.models.registry import create_model, model_kwargs_for

NOT_CLF = "{path}: not a clf checkpoint ({why}); use best.pt or last.pt written by `clf train`"
CORRUPT = "{path}: cannot read the checkpoint (corrupt, truncated or not a PyTorch file)"


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # conftest already pins torch to one thread


def make_state(arch="cnn", num_classes=3, img_size=32, train_step=True, **model_extra):
    """A checkpoint dict with every contract key, the way training fills it (one optimizer step taken)."""
    return checkpoint_state(
        arch, classes=["circle", "square", "star", "triangle"][:num_classes], img_size=img_size, epoch=2,
        train_step=train_step, model_extra=model_extra, run_name="cnn-test", best_val_acc=0.75,
        history=[{"epoch": 1, "train_loss": 1.1, "val_acc": 0.5}, {"epoch": 2, "train_loss": 0.9, "val_acc": 0.75}],
    )


# ---------------------------------------------------------------- round trip


def test_round_trip_loads_with_weights_only(tmp_path):
    state, model = make_state()
    path = save_checkpoint(state, tmp_path / "run" / "best.pt")  # creates the run folder
    assert path == tmp_path / "run" / "best.pt"

    raw = torch.load(path, weights_only=True)  # what the contract promises, without clf
    assert raw["format"] == "clf-checkpoint" and raw["version"] == CHECKPOINT_VERSION == 3

    ckpt = load_checkpoint(path)
    assert set(ckpt) == set(state) | {"source"}
    assert ckpt["source"] == str(path)
    for key in ["arch", "model_kwargs", "img_size", "classes", "preprocess", "config", "epoch", "history"]:
        assert ckpt[key] == state[key]
    assert ckpt["best_val_acc"] == 0.75 and ckpt["run_name"] == "cnn-test" and ckpt["scaler"] is None
    assert preprocess_from_checkpoint(ckpt) == Preprocess(size=(32, 32))
    assert TrainConfig.from_dict(ckpt["config"]) == TrainConfig(arch="cnn", img_size=32)
    assert ckpt["scheduler"]["last_epoch"] == 1

    rebuilt = model_from_checkpoint(ckpt)
    assert rebuilt.training is False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))

    optimizer = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    optimizer.load_state_dict(ckpt["optimizer"])  # resumable
    assert optimizer.state_dict()["state"][0]["step"] == 1


def test_rng_states_survive_and_restore(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state, _ = make_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    save_checkpoint(state, tmp_path / "last.pt")
    rng = load_checkpoint(tmp_path / "last.pt")["rng"]

    # to_plain turned tuples into lists and the numpy key array into a tensor; restoring converts back.
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy(), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_save_fills_metadata_and_drops_source(tmp_path):
    state, _ = make_state()
    for key in ["format", "version", "clf_version"]:
        del state[key]
    state["source"] = "/somewhere/else.pt"
    save_checkpoint(state, tmp_path / "best.pt")
    raw = torch.load(tmp_path / "best.pt", weights_only=True)
    stamp = (raw["format"], raw["version"], raw["clf_version"])
    assert stamp == ("clf-checkpoint", CHECKPOINT_VERSION, clf.__version__)
    assert "source" not in raw
    assert "format" not in state  # the caller's dict is left alone


def test_save_requires_model_keys(tmp_path):
    with pytest.raises(ValueError) as info:
        save_checkpoint({"arch": "cnn", "epoch": 1}, tmp_path / "x.pt")
    assert str(info.value) == "checkpoint state lacks model_kwargs, model"
    with pytest.raises(ValueError) as info:
        save_checkpoint({"arch": "cnn", "model_kwargs": {}, "model": {}, "format": "other"}, tmp_path / "x.pt")
    assert str(info.value) == "checkpoint format must be 'clf-checkpoint', got 'other'"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        (np.zeros(2), "checkpoint['rng']['numpy']", "numpy.ndarray"),
        ({"a": [1, np.float64(0.5)]}, "checkpoint['rng']['numpy']['a'][1]", "numpy.float64"),
        (Path("x"), "checkpoint['rng']['numpy']", "pathlib.PosixPath"),
    ],
)
def test_save_refuses_what_weights_only_would_refuse(tmp_path, value, where, kind):
    state, _ = make_state()
    state["rng"] = {"numpy": value}
    with pytest.raises(TypeError) as info:
        save_checkpoint(state, tmp_path / "best.pt")
    assert str(info.value) == (
        f"{where} is a {kind}, which torch.load(weights_only=True) refuses; "
        "convert it with clf.models.checkpoint.to_plain"
    )
    assert list(tmp_path.iterdir()) == []


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    state, _ = make_state()
    path = tmp_path / "last.pt"
    save_checkpoint(state, path)
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temp file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    state["epoch"] = 3
    with pytest.raises(StorageError, match=r"last.pt: cannot write \(disk full\)"):  # the user's path, not the temp's
        save_checkpoint(state, path)
    monkeypatch.setattr(torch, "save", real_save)

    assert load_checkpoint(path)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


class _FullAfter:
    """A file whose writes fail with ENOSPC after `room` of them, as a disk filling up mid-file."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_full_disk_under_the_real_torch_writer_is_a_storage_error(tmp_path, monkeypatch):
    """torch's C++ writer swallows the write's OSError and raises "unexpected pos" (issue 24): the OSError wins."""
    from clf.models import checkpoint

    state, _ = make_state()
    path = tmp_path / "last.pt"
    save_checkpoint(state, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "open", lambda *a, **k: _FullAfter(open(*a, **k), room=3), raising=False)
    state["epoch"] = 3
    with pytest.raises(StorageError) as info:
        save_checkpoint(state, path)
    assert str(info.value).startswith(f"{path}: disk full (") and str(info.value).endswith(
        " free); free some space or write elsewhere")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_torch_writer_failure_without_an_oserror_names_the_free_space(tmp_path, monkeypatch):
    def fails(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(StorageError) as info:
        save_checkpoint(make_state()[0], tmp_path / "last.pt")
    assert str(info.value).startswith(f"{tmp_path / 'last.pt'}: cannot write ([enforce fail at inline_container.cc:672]"
                                      " . unexpected pos 64 vs 0; ")
    assert str(info.value).endswith(" free); free some space or write elsewhere")
    assert list(tmp_path.iterdir()) == []


def test_another_torch_error_is_not_called_a_storage_error(tmp_path, monkeypatch):
    def fails(obj, f, *args, **kwargs):
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(torch, "save", fails)
    with pytest.raises(RuntimeError, match="something else"):
        save_checkpoint(make_state()[0], tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_atomic_save_replaces_existing_file(tmp_path):
    state, _ = make_state()
    save_checkpoint(state, tmp_path / "last.pt")
    state["epoch"] = 3
    save_checkpoint(state, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# ---------------------------------------------------------------- to_plain


class Colour(enum.IntEnum):
    RED = 1


@dataclass
class Point:
    x: int
    y: np.float32


def test_to_plain_converts_to_weights_only_types(tmp_path):
    key = np.arange(4, dtype=np.uint32)
    plain = to_plain(
        {
            "np_array": key,
            "np_float": np.float64(0.25),
            "np_int": np.int64(7),
            "np_bool": np.bool_(True),
            "strings": np.array(["a", "b"]),
            "tuple": (1, (2.0, "x"), None),
            "set": {3},
            "path": Path("runs/a"),
            "enum": Colour.RED,
            "ordered": OrderedDict(b=1),
            "dataclass": Point(1, np.float32(2.0)),
            "preprocess": Preprocess(size=(8, 8)),
            "tensor": torch.ones(2),
            "dtype": torch.float16,
        }
    )
    assert isinstance(plain["np_array"], torch.Tensor) and plain["np_array"].dtype == torch.uint32
    assert plain["np_array"].tolist() == [0, 1, 2, 3]
    key[0] = 99  # the tensor owns a copy
    assert plain["np_array"][0] == 0
    assert type(plain["np_float"]) is float and plain["np_float"] == 0.25
    assert type(plain["np_int"]) is int and type(plain["np_bool"]) is bool
    assert plain["strings"] == ["a", "b"]
    assert plain["tuple"] == [1, [2.0, "x"], None]
    assert plain["set"] == [3]
    assert plain["path"] == "runs/a"
    assert type(plain["enum"]) is int and plain["enum"] == 1
    assert type(plain["ordered"]) is dict
    assert plain["dataclass"] == {"x": 1, "y": 2.0} and type(plain["dataclass"]["y"]) is float
    assert plain["preprocess"]["size"] == [8, 8]
    assert Preprocess.from_dict(plain["preprocess"]) == Preprocess(size=(8, 8))
    assert torch.equal(plain["tensor"], torch.ones(2)) and plain["dtype"] is torch.float16

    torch.save(plain, tmp_path / "plain.pt")
    torch.load(tmp_path / "plain.pt", weights_only=True)  # does not raise


def test_to_plain_refuses_objects():
    with pytest.raises(TypeError) as info:
        to_plain({"model": nn.Linear(1, 1)})
    assert str(info.value) == "cannot store a torch.nn.modules.linear.Linear in a checkpoint"


# ---------------------------------------------------------------- load errors


def test_missing_file(tmp_path):
    with pytest.raises(ModelError) as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(info.value) == f"{tmp_path / 'nope.pt'}: checkpoint not found"


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b"", b"\x80\x02}q\x00(X\x01"])
def test_corrupt_or_foreign_bytes(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert str(info.value) == CORRUPT.format(path=path)


def test_truncated_checkpoint(tmp_path):
    state, _ = make_state()
    good = save_checkpoint(state, tmp_path / "good.pt")
    path = tmp_path / "truncated.pt"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert str(info.value) == CORRUPT.format(path=path)


def test_plain_state_dict_is_not_a_clf_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert str(info.value) == NOT_CLF.format(path=path, why="no clf metadata")
    assert str(info.value).startswith(f"{path}: not a clf checkpoint (no clf metadata); ")


@pytest.mark.parametrize("obj", [[1, 2], {"format": "other", "model": {}}, {"model": {}}])
def test_other_torch_files_are_not_clf_checkpoints(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert str(info.value) == NOT_CLF.format(path=path, why="no clf metadata")


def test_pickled_module_is_refused_not_executed(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert str(info.value) == NOT_CLF.format(
        path=path, why="it holds pickled Python objects, which are not loaded for safety"
    )


def test_newer_version_and_incomplete_checkpoint(tmp_path):
    state, _ = make_state()
    newer = tmp_path / "newer.pt"
    torch.save({**state, "version": CHECKPOINT_VERSION + 1}, newer)
    with pytest.raises(ModelError) as info:
        load_checkpoint(newer)
    assert str(info.value) == (f"{newer}: checkpoint version {CHECKPOINT_VERSION + 1} is newer than this clf reads "
                               f"({CHECKPOINT_VERSION}); upgrade clf")

    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in state.items() if k != "model"}, incomplete)
    with pytest.raises(ModelError) as info:
        load_checkpoint(incomplete)
    assert str(info.value) == f"{incomplete}: clf checkpoint is incomplete (no model); train again"


def test_load_a_run_folder_reads_best(tmp_path):
    state, _ = make_state()
    save_checkpoint({**state, "epoch": 5}, tmp_path / "last.pt")
    save_checkpoint({**state, "epoch": 4}, tmp_path / "best.pt")
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 4 and ckpt["source"] == str(tmp_path / "best.pt")


# ---------------------------------------------------------------- rebuild errors


def test_weights_of_another_arch(tmp_path):
    state, _ = make_state(width=8)
    state["arch"] = "resnet18"
    state["model_kwargs"] = model_kwargs_for("resnet18", 3, 32)
    path = save_checkpoint(state, tmp_path / "best.pt")
    expected_keys = create_model("resnet18", 3).state_dict()
    with pytest.raises(ModelError) as info:
        model_from_checkpoint(load_checkpoint(path))
    assert str(info.value) == (
        f"{path}: weights do not fit arch 'resnet18' ({len(expected_keys)} missing, e.g. 'conv1.weight'; "
        "50 unexpected, e.g. 'features.0.0.weight')"
    )


def test_weights_for_another_number_of_classes(tmp_path):
    state, _ = make_state(width=8)
    state["model_kwargs"] = {**state["model_kwargs"], "num_classes": 5}
    path = save_checkpoint(state, tmp_path / "best.pt")
    with pytest.raises(ModelError) as info:
        model_from_checkpoint(load_checkpoint(path))
    assert str(info.value) == (
        f"{path}: weights do not fit arch 'cnn' "
        "(2 of another shape, e.g. 'head.2.weight' [3, 64] vs [5, 64] in the model)"
    )


def test_unknown_arch_and_bad_kwargs_in_checkpoint(tmp_path):
    state, _ = make_state()
    with pytest.raises(ModelError) as info:
        model_from_checkpoint({**state, "arch": "nope"}, source="x.pt")
    assert str(info.value) == "x.pt: unknown architecture 'nope'; see `clf models`"
    with pytest.raises(ModelError) as info:
        model_from_checkpoint({**state, "model_kwargs": {"width": 8}}, source="x.pt")
    assert str(info.value).startswith("x.pt: cannot rebuild arch 'cnn' from model_kwargs {'width': 8} (")
    with pytest.raises(ModelError) as info:
        model_from_checkpoint({**state, "model": [1]}, source="x.pt")
    assert str(info.value) == "x.pt: weights do not fit arch 'cnn' (model weights are a list, not a state dict)"


def test_ddp_and_compiled_prefixes_are_accepted():
    state, model = make_state()
    for prefix in ["module.", "_orig_mod."]:
        wrapped = {prefix + k: v for k, v in state["model"].items()}
        rebuilt = model_from_checkpoint({**state, "model": wrapped}, source="x.pt")
        assert torch.equal(rebuilt.state_dict()["head.2.bias"], model.state_dict()["head.2.bias"])


def test_preprocess_missing():
    with pytest.raises(ModelError) as info:
        preprocess_from_checkpoint({"arch": "cnn", "source": "x.pt"})
    assert str(info.value) == "x.pt: checkpoint has no valid preprocess settings ('preprocess')"


def test_coatnet_checkpoint_rebuilds_at_its_img_size():
    # In memory: the disk round trip is covered above, and 27M parameters take seconds to write on a busy box.
    state, model = make_state("coatnet_0_rw_224", num_classes=2, img_size=32, train_step=False)
    assert state["model_kwargs"] == {"num_classes": 2, "img_size": 32}
    rebuilt = model_from_checkpoint(state, source="best.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=1e-6)


# ---------------------------------------------------------------- resolve


def test_resolve_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ModelError) as info:
        resolve_checkpoint(run)
    assert str(info.value) == (
        f"{run}: no best.pt or last.pt in this folder; pass a run folder of `clf train` or a .pt file"
    )
    (run / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "last.pt"
    (run / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "best.pt"
    assert resolve_checkpoint(run, prefer="last") == run / "last.pt"
    assert resolve_checkpoint(str(run / "last.pt")) == run / "last.pt"  # a file is itself
    with pytest.raises(ModelError) as info:
        resolve_checkpoint(tmp_path / "missing")
    assert str(info.value) == f"{tmp_path / 'missing'}: no such run folder or checkpoint file"
    with pytest.raises(ValueError):
        resolve_checkpoint(run, prefer="worst")


def test_no_temp_files_in_run_folder_after_saves(tmp_path):
    state, _ = make_state()
    for epoch in range(3):
        save_checkpoint({**state, "epoch": epoch}, tmp_path / "last.pt")
    assert os.listdir(tmp_path) == ["last.pt"]


def test_build_checkpoint_lays_out_the_documented_schema():
    model = create_model("cnn", 3, img_size=32)
    ckpt = build_checkpoint(arch="cnn", model_kwargs=model_kwargs_for("cnn", 3, 32), classes=["a", "b", "c"],
                            preprocess=Preprocess(size=(32, 32)), config=TrainConfig(arch="cnn").to_dict(),
                            model=model.state_dict())
    assert list(ckpt) == ["format", "version", "clf_version", "arch", "model_kwargs", "img_size", "classes",
                          "preprocess", "config", "epoch", "model", "optimizer", "scheduler", "scaler", "rng",
                          "history", "best_val_acc", "run_name", "params", "augment", "weights", "ema", "ema_updates"]
    assert (ckpt["weights"], ckpt["ema"], ckpt["ema_updates"]) == ("raw", None, None)  # EMA off
    assert (ckpt["format"], ckpt["version"], ckpt["clf_version"]) == (CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                                                      clf.__version__)
    assert ckpt["params"] == sum(p.numel() for p in model.parameters())  # BatchNorm statistics are not parameters
    assert ckpt["img_size"] == 32 and SOURCE_KEY not in ckpt


def test_the_path_read_is_carried_under_source_only(tmp_path):
    state, _ = make_state()
    ckpt = load_checkpoint(save_checkpoint(state, tmp_path / "last.pt"))
    assert ckpt[SOURCE_KEY] == str(tmp_path / "last.pt") and "_path" not in ckpt
    assert SOURCE_KEY not in torch.load(save_checkpoint(ckpt, tmp_path / "again.pt"), weights_only=True)


# ---------------------------------------------------------------- checkpoints of the first cnn design


def _version_2_cnn_checkpoint(tmp_path: Path) -> tuple[Path, nn.Module]:
    """What clf wrote before version 3: the one-conv-per-block cnn, model_kwargs without its design."""
    torch.manual_seed(0)
    old = SimpleCNN(num_classes=3, **CNN_DESIGN_V1).eval()
    state, _ = make_state()
    state.update(version=2, model_kwargs={"num_classes": 3}, model=old.state_dict())
    path = tmp_path / "best.pt"
    torch.save(state, path)
    return path, old


def test_version_2_cnn_checkpoint_rebuilds_its_own_design(tmp_path):
    path, old = _version_2_cnn_checkpoint(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt["model_kwargs"] == {"num_classes": 3, **CNN_DESIGN_V1}
    rebuilt = model_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), old(x))


def test_version_3_cnn_checkpoint_keeps_its_recorded_design(tmp_path):
    state, _ = make_state(width=8)
    assert state["model_kwargs"] == {"num_classes": 3, **CNN_DESIGN, "width": 8}
    path = save_checkpoint(state, tmp_path / "best.pt")
    assert load_checkpoint(path)["model_kwargs"] == {"num_classes": 3, **CNN_DESIGN, "width": 8}
