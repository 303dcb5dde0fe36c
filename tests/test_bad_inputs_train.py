"""The bad-input catalogue for `clf train` (new runs and --resume), `clf runs` and `clf models`.

One tiny sample competition and one finished 1-epoch run are built once for the module; each row builds its own
hostile input beside them. Rows that could destroy something guard the trees involved.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from bad_inputs import Case, run_case, tree_digest
from cli_helpers import clf
from train_helpers import make_data

from clf.config import TrainConfig
from clf.data.folds import FoldGroup, write_group
from clf.ownership import mark_folder

FAST = ["--arch", "cnn", "--img-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet",
        "--epochs", "1"]
TRAIN = ["train", "{data}", *FAST, "--out", "{tmp}/runs"]
RESUME = ["--workers", "0", "--device", "cpu", "--quiet"]


# ---------------------------------------------------------------- inputs the rows build


def user_folder_with_config(places) -> None:
    proj = places["tmp"] / "runs" / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text('{"mine": true}')
    (proj / "precious.txt").write_text("keep me")
    (proj / "src" / "main.py").write_text("print('hi')")


def ema_best_run(places) -> None:
    """The finished run, as if its EMA weights had won its only epoch: best.pt holds them (weights "ema")."""
    run = places["tmp"] / "runs" / "emabest"
    shutil.copytree(places["run"], run)
    state = torch.load(run / "best.pt", weights_only=True)
    torch.save({**state, "weights": "ema"}, run / "best.pt")


def unmarked_folder(places) -> None:
    thesis = places["tmp"] / "runs" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "chapter1.txt").write_text("years of work")


def legacy_run(places) -> None:
    """A v0.1 run folder (no marker): it still resumes, but --overwrite cannot prove what in it is clf's."""
    legacy = places["tmp"] / "runs" / "legacy"
    shutil.copytree(places["run"], legacy)
    (legacy / ".clf-folder.json").unlink()


def marked_run_with(name: str, extra: str):
    def setup(places) -> None:
        run = places["tmp"] / "runs" / name
        shutil.copytree(places["run"], run)
        if extra == "file":
            (run / "notes.txt").write_text("what I tried")
        elif extra == "link":
            (run / "data-link").symlink_to(places["data"])
    return setup


def sample_data_folder(places) -> None:
    mark_folder(places["tmp"] / "runs" / "comp", "sample-data", files=["a.txt"])
    (places["tmp"] / "runs" / "comp" / "a.txt").write_text("x")


def a_file(name: str):
    def setup(places) -> None:
        (places["tmp"] / name).parent.mkdir(parents=True, exist_ok=True)
        (places["tmp"] / name).write_text("not what you think")
    return setup


def classes(name: str, spec: dict[str, int | str]):
    """A class-folder tree under tmp/name: class -> number of good images, or "bad" (two unreadable files)."""
    def setup(places) -> None:
        root = places["tmp"] / name
        good = sorted((places["data"] / "circle").iterdir())
        for cls, what in spec.items():
            folder = root / cls
            folder.mkdir(parents=True)
            if what == "bad":
                for i in range(2):
                    (folder / f"broken{i}.png").write_bytes(b"not a png")
            else:
                for i in range(int(what)):
                    shutil.copy(good[i], folder / f"img{i}.png")
    return setup


def labels_csv(name: str, header: str, bad_class: bool = False):
    def setup(places) -> None:
        root = places["tmp"] / name
        root.mkdir()
        good = sorted((places["data"] / "circle").iterdir())
        rows = []
        for i in range(4):
            shutil.copy(good[i], root / f"img{i}.png")
            rows.append(f"img{i}.png,{'a' if i % 2 else 'b'}")
        if bad_class:
            for i in range(2):
                (root / f"broken{i}.png").write_bytes(b"not a png")
                rows.append(f"broken{i}.png,c")
        (places["tmp"] / f"{name}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return setup


def multilabel_csv(name: str, text: str):
    """tmp/name/img0..3.png and tmp/name.csv holding `text` (its rows name those images)."""
    def setup(places) -> None:
        root = places["tmp"] / name
        root.mkdir()
        for i, good in enumerate(sorted((places["data"] / "circle").iterdir())[:4]):
            shutil.copy(good, root / f"img{i}.png")
        (places["tmp"] / f"{name}.csv").write_text(text)
    return setup


def multilabel(name: str, *more: str) -> list[str]:
    """`clf train` of a multi-label CSV built by `multilabel_csv(name, ...)`."""
    return ["train", f"{{tmp}}/{name}", "--labels-csv", f"{{tmp}}/{name}.csv", "--task", "multilabel", *FAST,
            "--out", "{tmp}/runs", *more]


def run_without_checkpoint(places) -> None:
    run = places["tmp"] / "runs" / "fresh"
    mark_folder(run, "run", files=["config.json"])
    (run / "config.json").write_text(json.dumps({"train": {}}))


def damaged_checkpoint(name: str, how: str):
    def setup(places) -> None:
        run = places["tmp"] / "runs" / name
        shutil.copytree(places["run"], run)
        if how == "corrupt":
            (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:500])
        else:
            torch.save({"format": "clf-checkpoint", "version": 1, "arch": "cnn", "model_kwargs": {},
                        "model": {}, "thing": Path("/etc/passwd")}, run / "last.pt")
    return setup


def symlink_loop(name: str):
    def setup(places) -> None:
        (places["tmp"] / name).symlink_to(name)
    return setup


def checkpoint_with(name: str, **changes):
    """A copy of the finished run whose last.pt has `changes` applied to its dict."""
    def setup(places) -> None:
        run = places["tmp"] / "runs" / name
        shutil.copytree(places["run"], run)
        ckpt = torch.load(run / "last.pt", weights_only=True)
        given = dict(changes)
        first = given.pop("model_first_weight", None)
        if first is not None:
            ckpt["model"][next(iter(ckpt["model"]))] = first
        ckpt.update(given)
        torch.save(ckpt, run / "last.pt")
    return setup


def loose_checkpoint(places) -> None:
    (places["tmp"] / "loose").mkdir()
    shutil.copy(places["run"] / "last.pt", places["tmp"] / "loose" / "last.pt")


def runs_folder(name: str, bad: str | None):
    def setup(places) -> None:
        root = places["tmp"] / name
        root.mkdir()
        if bad is None:
            return
        shutil.copytree(places["run"], root / "good")
        (root / "bad").mkdir()
        (root / "bad" / "config.json").write_text(bad)
    return setup


def fold_group(name: str, folds: int = 2, fold_seed: int = 0, text: str | None = None, members=None,
               user_file: str | None = None):
    """A fold group folder as `clf train --folds` leaves it before its first fold ends (record, marker, fold-0
    started); `text` replaces group.json, `members` its member list, `user_file` adds a file of the user's."""
    def setup(places) -> None:
        group = places["tmp"] / "runs" / name
        mark_folder(group, "run", files=["group.json", "oof.csv"])
        cfg = TrainConfig(data=str(places["data"]), arch="cnn", img_size=32, epochs=1, folds=folds,
                          fold_seed=fold_seed, name=name, out=str(group.parent))
        write_group(group, FoldGroup(folds=folds, fold_seed=fold_seed, members=[f"fold-{k}" for k in range(folds)],
                                     classes=["circle", "square", "star", "triangle"], arch="cnn",
                                     config=cfg.to_dict()))
        if members is not None:
            record = json.loads((group / "group.json").read_text())
            (group / "group.json").write_text(json.dumps({**record, "members": members}))
        if text is not None:
            (group / "group.json").write_text(text)
        mark_folder(group / "fold-0", "run", files=["config.json"])
        (group / "fold-0" / "config.json").write_text("{}")
        if user_file is not None:
            (group / user_file).write_text("mine")
    return setup


def run_with_refit(name: str, user_file: bool = False):
    """The finished run copied as `clf train --refit` leaves it: its refit, a run folder with its own marker, in
    refit/ (`user_file`: with a file of the user's in it)."""
    def setup(places) -> None:
        run = places["tmp"] / "runs" / name
        shutil.copytree(places["run"], run)
        shutil.copytree(places["run"], run / "refit")
        if user_file:
            (run / "refit" / "notes.txt").write_text("mine")
    return setup


def replaced_by_a_group(name: str):
    def check(places) -> None:
        group = places["tmp"] / "runs" / name
        assert sorted(p.name for p in group.iterdir()) == [".clf-folder.json", "fold-0", "fold-1", "group.json",
                                                           "oof.csv"]
    return check


def outside_folder(places) -> None:
    """What a member "../x" would point at: a folder beside the group that must never be touched."""
    (places["tmp"] / "runs" / "x").mkdir(parents=True)
    (places["tmp"] / "runs" / "x" / "best.pt").write_text("not clf's")


def epoch_of(relative: str, epoch: int):
    def check(places) -> None:
        assert torch.load(places["tmp"] / relative, weights_only=True)["epoch"] == epoch
    return check


def no_val_run(name: str):
    """The finished run, copied as a --no-val run had written it (its checkpoints' val_split 0)."""
    def setup(places) -> None:
        run = places["tmp"] / "runs" / name
        shutil.copytree(places["run"], run)
        for checkpoint in ("last.pt", "best.pt"):
            state = torch.load(run / checkpoint, weights_only=True)
            torch.save({**state, "config": {**state["config"], "val_split": 0.0}}, run / checkpoint)
    return setup


def absent(relative: str):
    def check(places) -> None:
        assert not (places["tmp"] / relative).exists()
    return check


# ---------------------------------------------------------------- faults injected with monkeypatch


def full_disk(kind: str):
    """torch.save fails while writing the second epoch's last.pt, as on a full disk."""
    def patch(monkeypatch) -> None:
        real = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("epoch") == 2:
                f.write(b"PK\x03\x04 half a zip")
                if kind == "oserror":
                    raise OSError(errno.ENOSPC, "No space left on device")
                raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing "
                                   "file data/3: file write failed")
            return real(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    return patch


# last.pt's bytes right before the save that fails (keyed by the row's run name)
LAST_BEFORE_THE_FAILED_SAVE: dict[str, str] = {}


class DiskFilledUp:
    """A file handle whose writes fail with ENOSPC once `room` writes have gone through (None: never), as on a disk
    that fills up mid-file; flush and close work, as on a real disk whose last write failed."""

    room: int | None = None

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data) -> int:
        if DiskFilledUp.room is not None:
            if DiskFilledUp.room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            DiskFilledUp.room -= 1
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def disk_fills_up(name: str):
    """The real torch.save writes the second epoch's last.pt of run `name` to a disk that fills up: torch's C++
    writer swallows the OSError and raises "RuntimeError: [enforce fail at inline_container.cc] unexpected pos" (a
    traceback before issue 24)."""
    def patch(monkeypatch) -> None:
        from clf.models import checkpoint

        real_save, real_open = torch.save, open

        def save(obj, f, *args, **kwargs):
            failing = isinstance(obj, dict) and obj.get("epoch") == 2 and obj.get("run_name") == name
            if failing:
                LAST_BEFORE_THE_FAILED_SAVE[name] = tree_digest(Path(obj["config"]["out"]) / name / "last.pt")["."]
            DiskFilledUp.room = 3 if failing else None  # the zip's first records fit
            try:
                return real_save(obj, f, *args, **kwargs)
            finally:
                DiskFilledUp.room = None

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(checkpoint, "open", lambda *a, **k: DiskFilledUp(real_open(*a, **k)), raising=False)
    return patch


def last_unchanged(name: str):
    def check(places) -> None:
        last = places["tmp"] / "runs" / name / "last.pt"
        assert tree_digest(last)["."] == LAST_BEFORE_THE_FAILED_SAVE[name]
        assert torch.load(last, weights_only=True)["epoch"] == 1
        assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    return check


def config_file(name: str, content: str | bytes):
    """A --config file under tmp (text or bytes)."""
    def setup(places) -> None:
        path = places["tmp"] / "configs" / name
        path.parent.mkdir(exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.format(data=places["data"]))
    return setup


def config_special(name: str, kind: str):
    """A --config path that is a FIFO or a folder."""
    def setup(places) -> None:
        path = places["tmp"] / "configs" / name
        path.parent.mkdir(exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
    return setup


def newer_run_config(places) -> None:
    """A run's config.json from a later clf, with a train setting this clf does not know."""
    path = places["tmp"] / "configs" / "newer" / "config.json"
    path.parent.mkdir(parents=True)
    train = json.loads((places["run"] / "config.json").read_text())["train"]
    path.write_text(json.dumps({"train": {**train, "future_setting": "on"}, "clf_version": "9.0.0"}))


CONFIG = ["train", "--out", "{tmp}/runs", "--config"]  # --out: a row that trains by mistake writes under tmp


PATCHES = {"full-disk-oserror": full_disk("oserror"), "full-disk-torch-writer": full_disk("runtime"),
           "full-disk-real-torch-writer": disk_fills_up("disk3")}


CASES = [
    # --overwrite and run folders: nothing of the user's is ever deleted
    Case("overwrite-user-config-json", [*TRAIN, "--name", "proj", "--overwrite"], 2,
         "runs/proj: not a run folder written by clf (no .clf-folder.json; holds config.json, precious.txt, src)",
         setup=user_folder_with_config, guard=["{tmp}/runs/proj"]),
    Case("overwrite-unmarked-folder", [*TRAIN, "--name", "thesis", "--overwrite"], 2,
         "runs/thesis: not a run folder written by clf", setup=unmarked_folder, guard=["{tmp}/runs/thesis"]),
    Case("overwrite-v01-run-without-marker", [*TRAIN, "--name", "legacy", "--overwrite"], 2,
         "runs/legacy: not a run folder written by clf", setup=legacy_run, guard=["{tmp}/runs/legacy"]),
    Case("overwrite-run-holding-a-user-file", [*TRAIN, "--name", "noted", "--overwrite"], 2,
         "runs/noted: holds 1 file(s) clf did not write (notes.txt)",
         setup=marked_run_with("noted", "file"), guard=["{tmp}/runs/noted", "{data}"]),
    Case("overwrite-run-holding-a-link", [*TRAIN, "--name", "linked", "--overwrite"], 2,
         "runs/linked: holds 1 file(s) clf did not write (data-link)",
         setup=marked_run_with("linked", "link"), guard=["{tmp}/runs/linked", "{data}"]),
    Case("overwrite-sample-data-folder", [*TRAIN, "--name", "comp", "--overwrite"], 2,
         "runs/comp: is a clf sample-data folder, not a run folder", setup=sample_data_folder,
         guard=["{tmp}/runs/comp"]),
    Case("existing-run-without-overwrite", [*TRAIN, "--name", "done"], 2,
         "runs/done: run folder already exists; use --resume", guard=["{run}"]),
    Case("existing-run-without-a-finished-epoch", [*TRAIN, "--name", "fresh"], 2,
         "no finished epoch to resume; start it again with --overwrite", setup=run_without_checkpoint,
         guard=["{tmp}/runs/fresh"]),
    Case("name-dot-dot", [*TRAIN, "--name", "../x", "--overwrite"], 2,
         "--name '../x': a run name is a plain folder name", check=absent("x")),
    Case("name-dot", [*TRAIN, "--name", ".", "--overwrite"], 2, "--name '.': a run name is a plain folder name",
         guard=["{run}"]),
    Case("out-under-a-file", ["train", "{data}", *FAST, "--out", "{tmp}/blocker/runs"], 2, "blocker/runs",
         setup=a_file("blocker")),
    # flags
    Case("lr-inf", [*TRAIN, "--lr", "inf"], 2, "--lr must be a finite number, got inf"),
    Case("lr-nan", [*TRAIN, "--lr", "nan"], 2, "--lr must be a finite number, got nan"),
    Case("weight-decay-minus-inf", [*TRAIN, "--weight-decay", "-inf"], 2,
         "--weight-decay must be a finite number, got -inf"),
    Case("rotate-nan", [*TRAIN, "--rotate", "nan"], 2, "--rotate must be a finite number, got nan"),
    Case("epochs-0", [*TRAIN, "--epochs", "0"], 2, "--epochs must be >= 1"),
    # regularisation and averaging (each refused before a run folder is made)
    Case("ema-1", [*TRAIN, "--name", "ema1", "--ema", "1"], 2,
         "--ema is a decay >= 0 and < 1 (0 = off; e.g. 0.999), got 1.0", check=absent("runs/ema1")),
    Case("ema-minus", [*TRAIN, "--ema", "-0.5"], 2, "--ema is a decay >= 0 and < 1 (0 = off; e.g. 0.999), got -0.5"),
    Case("ema-nan", [*TRAIN, "--ema", "nan"], 2, "--ema must be a finite number, got nan"),
    Case("mixup-minus-1", [*TRAIN, "--mixup", "-1"], 2, "--mixup is a Beta alpha >= 0 (0 = off), got -1.0"),
    Case("mixup-inf", [*TRAIN, "--mixup", "inf"], 2, "--mixup must be a finite number, got inf"),
    Case("cutmix-minus-1", [*TRAIN, "--cutmix", "-1"], 2, "--cutmix is a Beta alpha >= 0 (0 = off), got -1.0"),
    Case("mix-prob-2", [*TRAIN, "--mixup", "0.2", "--mix-prob", "2"], 2,
         "--mix-prob is a probability between 0 and 1, got 2.0"),
    Case("mix-switch-minus", [*TRAIN, "--cutmix", "1", "--mix-switch", "-0.5"], 2,
         "--mix-switch is a probability between 0 and 1, got -0.5"),
    Case("drop-path-1", [*TRAIN, "--drop-path", "1"], 2, "--drop-path must be >= 0 and < 1, got 1.0"),
    Case("dropout-1", [*TRAIN, "--dropout", "1"], 2, "--dropout must be >= 0 and < 1, got 1.0"),
    Case("drop-path-for-cnn", [*TRAIN, "--name", "dp", "--drop-path", "0.1"], 2,
         "--drop-path: 'cnn' has no stochastic depth; leave --drop-path out", check=absent("runs/dp")),
    Case("drop-path-for-alexnet", ["train", "{data}", *FAST, "--arch", "alexnet", "--img-size", "64", "--name", "dpa",
                                   "--drop-path", "0.1", "--out", "{tmp}/runs"], 2,
         "--drop-path: 'alexnet' has no stochastic depth; leave --drop-path out", check=absent("runs/dpa")),
    Case("drop-path-for-timm-without-it", ["train", "{data}", *FAST, "--arch", "ghostnet_050", "--name", "dpg",
                                           "--drop-path", "0.1", "--out", "{tmp}/runs"], 2,
         "--drop-path: 'ghostnet_050' has no stochastic depth; leave --drop-path out", check=absent("runs/dpg")),
    Case("resume-with-ema", ["train", "--resume", "{run}", "--ema", "0.99", "--epochs", "2"], 2,
         "--ema 0.99 differs from the checkpoint's 0.999", guard=["{run}"]),
    Case("resume-with-mixup", ["train", "--resume", "{run}", "--mixup", "0.2", "--epochs", "2"], 2,
         "--mixup 0.2 differs from the checkpoint's 0.0", guard=["{run}"]),
    Case("resume-from-ema-best", ["train", "--resume", "{tmp}/runs/emabest/best.pt", *RESUME, "--epochs", "2"], 2,
         "best.pt: holds the averaged (EMA) weights of its best epoch, not the weights training continues from; "
         "resume the run folder (its last.pt)", setup=ema_best_run, guard=["{tmp}/runs/emabest"]),
    Case("img-size-8", [*TRAIN, "--img-size", "8"], 2, "--img-size must be >= 16"),
    Case("batch-size-0", [*TRAIN, "--batch-size", "0"], 2, "--batch-size must be >= 1"),
    Case("val-split-1", [*TRAIN, "--val-split", "1"], 2, "--val-split must be >= 0 and < 1"),
    Case("hflip-2", [*TRAIN, "--hflip", "2"], 2, "--hflip must be >= 0 and <= 1, got 2"),
    Case("negative-weight-decay", [*TRAIN, "--weight-decay", "-0.1"], 2, "--weight-decay must be >= 0"),
    Case("unknown-arch", [*TRAIN, "--arch", "nope_net"], 2, "unknown architecture 'nope_net'; see `clf models`",
         check=absent("runs/nope_net-32")),
    Case("bad-optimizer", [*TRAIN, "--optimizer", "adam"], 2, "--optimizer must be one of sgd, adamw, got 'adam'"),
    Case("bad-scheduler", [*TRAIN, "--scheduler", "exp"], 2,
         "--scheduler must be one of cosine, step, none, got 'exp'"),
    Case("bad-device", [*TRAIN, "--device", "tpu"], 2, "--device must be one of auto, cpu, cuda, got 'tpu'"),
    Case("bad-resize", [*TRAIN, "--resize", "squash"], 2, "--resize must be one of stretch, shorter_crop"),
    Case("size-the-arch-cannot-take", [*TRAIN, "--arch", "alexnet"], 2,
         "img_size 32 does not work with arch 'alexnet'"),
    # data
    Case("missing-data-argument", ["train", *FAST, "--out", "{tmp}/runs"], 2, "clf train needs DATA"),
    Case("data-folder-missing", ["train", "{tmp}/nope", *FAST, "--out", "{tmp}/runs"], 2, "nope: folder not found"),
    Case("data-is-a-file", ["train", "{tmp}/data.jpg", *FAST, "--out", "{tmp}/runs"], 2, "data.jpg: not a folder",
         setup=a_file("data.jpg"), guard=["{tmp}/data.jpg"]),
    Case("one-class-folder", ["train", "{tmp}/oneclass", *FAST, "--out", "{tmp}/runs"], 2,
         "found 1 class folder(s), need at least 2", setup=classes("oneclass", {"a": 4})),
    Case("empty-class-folder", ["train", "{tmp}/emptyclass", *FAST, "--out", "{tmp}/runs"], 2,
         "emptyclass/b: class folder has no images", setup=classes("emptyclass", {"a": 4, "b": 0})),
    Case("all-unreadable-class-folder", ["train", "{tmp}/badclass", *FAST, "--out", "{tmp}/runs"], 2,
         "badclass/b: class folder has no images that can be read (its 2 file(s) are reported above)",
         setup=classes("badclass", {"a": 4, "b": "bad", "c": 4}), guard=["{tmp}/badclass"],
         check=absent("runs/cnn-32")),
    Case("labels-csv-missing-column",
         ["train", "{tmp}/csvcol", "--labels-csv", "{tmp}/csvcol.csv", *FAST, "--out", "{tmp}/runs"], 2,
         "csvcol.csv: no column 'filename' (columns: file, label)", setup=labels_csv("csvcol", "file,label")),
    Case("labels-csv-class-all-unreadable",
         ["train", "{tmp}/csvbad", "--labels-csv", "{tmp}/csvbad.csv", *FAST, "--out", "{tmp}/runs"], 2,
         "csvbad.csv: class 'c' has no images that can be read", setup=labels_csv("csvbad", "filename,label", True),
         guard=["{tmp}/csvbad"]),
    # --task multilabel (clf/data/multilabel.py): each is one line naming the CSV and its line, before any run folder
    Case("multilabel-empty-tag-cell", multilabel("mlempty"), 2,
         "mlempty.csv: line 3: empty 'label'; every image needs at least one tag (an image with no class: use one 0/1 "
         "column per class, a row of zeros)", setup=multilabel_csv("mlempty", "filename,label\nimg0,a b\nimg1,\n"),
         check=absent("runs/cnn-32")),
    Case("multilabel-comma-separated-tags", multilabel("mlcomma"), 2,
         "mlcomma.csv: line 2: tag 'a,b' holds ','; separate tags with spaces (\"a b\")",
         setup=multilabel_csv("mlcomma", 'filename,label\nimg0,"a,b"\nimg1,a\n')),
    Case("multilabel-class-no-image-holds", multilabel("mlunheld", "--classes", "a,b,c"), 2,
         "mlunheld.csv: class 'c' of --classes is held by no image, so it cannot be learned; remove it from "
         "--classes or add images of it", setup=multilabel_csv("mlunheld", "filename,label\nimg0,a b\nimg1,b\n")),
    Case("multilabel-tag-outside-classes", multilabel("mlout", "--classes", "a,b"), 2,
         "mlout.csv: line 3: tag 'z' is not one of --classes; add it to --classes or fix the tag",
         setup=multilabel_csv("mlout", "filename,label\nimg0,a\nimg1,b z\n")),
    Case("multilabel-not-zero-or-one", multilabel("mlflag"), 2,
         "mlflag.csv: line 3: '2' in class column 'b'; class columns hold 0 or 1",
         setup=multilabel_csv("mlflag", "filename,a,b\nimg0,1,0\nimg1,0,2\n")),
    Case("multilabel-group-column-missing", multilabel("mlgroup", "--group-col", "patient"), 2,
         "mlgroup.csv: no group column 'patient' (columns: filename, label); name it with --group-col",
         setup=multilabel_csv("mlgroup", "filename,label\nimg0,a\nimg1,b\n")),
    Case("multilabel-no-label-or-class-columns", multilabel("mlnocol"), 2,
         "mlnocol.csv: no label column 'label' and no class columns (columns: filename); give the tags column "
         "with --label-col, or one 0/1 column per class", setup=multilabel_csv("mlnocol", "filename\nimg0\nimg1\n")),
    Case("multilabel-class-folders", [*TRAIN, "--task", "multilabel"], 2,
         "--task multilabel reads each image's classes from --labels-csv (a column of space-separated tags, or one "
         "0/1 column per class); class folders hold one class per image: add --labels-csv FILE"),
    Case("classes-with-class-folders", [*TRAIN, "--classes", "a,b"], 2,
         "--classes names the classes of --labels-csv; class folders name their own"),
    # resume
    Case("resume-missing-folder", ["train", "--resume", "{tmp}/runs/gone", *RESUME], 2,
         "runs/gone: no such run folder or checkpoint file"),
    Case("resume-without-checkpoint", ["train", "--resume", "{tmp}/runs/fresh2", *RESUME], 2,
         "runs/fresh2: no finished epoch to resume; start it again with --overwrite",
         setup=lambda p: (mark_folder(p["tmp"] / "runs" / "fresh2", "run"),
                          (p["tmp"] / "runs" / "fresh2" / "config.json").write_text("{}")),
         guard=["{tmp}/runs/fresh2"]),
    Case("resume-with-another-arch", ["train", "--resume", "{run}", "--arch", "resnet18", "--epochs", "2"], 2,
         "checkpoint is arch 'cnn', not 'resnet18'; resume with the same --arch", guard=["{run}"]),
    Case("resume-epochs-not-larger", ["train", "--resume", "{run}", "--epochs", "1", *RESUME], 2,
         "already trained 1 epochs; pass --epochs N with N > 1 to train further", guard=["{run}"]),
    Case("resume-with-another-lr", ["train", "--resume", "{run}", "--lr", "0.5", "--epochs", "2"], 2,
         "--lr 0.5 differs from the checkpoint's 0.003", guard=["{run}"]),
    Case("resume-lr-inf", ["train", "--resume", "{run}", "--lr", "inf", "--epochs", "2"], 2,
         "--lr must be a finite number, got inf", guard=["{run}"]),
    Case("resume-corrupt-checkpoint", ["train", "--resume", "{tmp}/runs/corrupt", "--epochs", "2", *RESUME], 2,
         "cannot read the checkpoint (corrupt, truncated or not a PyTorch file)",
         setup=damaged_checkpoint("corrupt", "corrupt"), guard=["{tmp}/runs/corrupt"]),
    Case("resume-checkpoint-with-a-pickled-object", ["train", "--resume", "{tmp}/runs/pickled", "--epochs", "2",
                                                     *RESUME], 2,
         "it holds pickled Python objects, which are not loaded for safety",
         setup=damaged_checkpoint("pickled", "pickle"), guard=["{tmp}/runs/pickled"]),
    Case("resume-checkpoint-outside-a-run-folder", ["train", "--resume", "{tmp}/loose/last.pt", "--epochs", "2",
                                                    *RESUME], 2,
         "loose/last.pt: not inside a clf run folder", setup=loose_checkpoint, guard=["{tmp}/loose"]),
    # faults
    Case("full-disk-oserror", [*TRAIN, "--name", "disk1", "--epochs", "2"], 2, "runs/disk1/last.pt: disk full (",
         check=epoch_of("runs/disk1/last.pt", 1)),
    Case("full-disk-torch-writer", [*TRAIN, "--name", "disk2", "--epochs", "2"], 2, "runs/disk2/last.pt: disk full (",
         check=epoch_of("runs/disk2/last.pt", 1)),
    # issue 24: the real torch.save on a full disk raises "unexpected pos", not an OSError (was a traceback)
    Case("full-disk-real-torch-writer", [*TRAIN, "--name", "disk3", "--epochs", "2"], 2,
         "runs/disk3/last.pt: disk full (", check=last_unchanged("disk3")),
    Case("diverging-loss", [*TRAIN, "--name", "nan", "--lr", "1e30", "--optimizer", "sgd"], 4,
         "loss became", check=absent("runs/nan/best.pt")),
    # found by the attack on issue 8's work: each was a traceback (exit 1), a silent misreading or a left-over folder
    Case("data-symlink-loop", ["train", "{tmp}/loop", *FAST, "--out", "{tmp}/runs"], 2,
         "loop: cannot resolve the path (Symlink loop from", setup=symlink_loop("loop"), guard=["{tmp}/loop"]),
    Case("labels-csv-symlink-loop", ["train", "{data}", "--labels-csv", "{tmp}/loop.csv", *FAST, "--out",
                                     "{tmp}/runs"], 2,
         "loop.csv: cannot resolve the path", setup=symlink_loop("loop.csv"), guard=["{data}"]),
    Case("seed-negative", [*TRAIN, "--name", "seedneg", "--seed", "-1"], 2,
         "--seed must be >= 0 and < 2147483648 (2**31), got -1", check=absent("runs/seedneg")),
    Case("seed-huge", [*TRAIN, "--name", "seedbig", "--seed", "99999999999999999999"], 2,
         "--seed must be >= 0 and < 2147483648 (2**31), got 99999999999999999999", check=absent("runs/seedbig")),
    Case("img-size-100000", [*TRAIN, "--img-size", "100000"], 2, "--img-size must be <= 4096"),
    Case("out-empty", ["train", "{data}", *FAST, "--out", ""], 2,
         "--out is empty; give the folder that holds run folders (default: runs)"),
    Case("labels-csv-empty-flag", [*TRAIN, "--labels-csv", ""], 2, "--labels-csv is empty; give the CSV file"),
    Case("data-empty-string", ["train", "", *FAST, "--out", "{tmp}/runs"], 2, "clf train needs DATA"),
    Case("resume-checkpoint-config-is-a-list", ["train", "--resume", "{tmp}/runs/cfglist", "--epochs", "2", *RESUME],
         2, "checkpoint has no training settings ('config' is list, not a mapping)",
         setup=checkpoint_with("cfglist", config=[1, 2]), guard=["{tmp}/runs/cfglist"]),
    Case("resume-checkpoint-config-bad-values", ["train", "--resume", "{tmp}/runs/cfgbad", "--epochs", "2", *RESUME],
         2, "checkpoint's training settings are invalid (--epochs must be >= 1)",
         setup=checkpoint_with("cfgbad", config={"epochs": 0}), guard=["{tmp}/runs/cfgbad"]),
    Case("resume-weights-of-another-shape", ["train", "--resume", "{tmp}/runs/reshaped", "--epochs", "2", *RESUME], 2,
         "runs/reshaped/last.pt: weights do not fit arch 'cnn' (1 of another shape, e.g. 'features.0.0.weight' [3]",
         setup=checkpoint_with("reshaped", model_first_weight=torch.zeros(3)), guard=["{tmp}/runs/reshaped"]),
    Case("resume-optimizer-state-damaged", ["train", "--resume", "{tmp}/runs/badopt", "--epochs", "2", *RESUME], 2,
         "runs/badopt/last.pt: cannot restore the training state (loaded state dict has a different number of "
         "parameter groups)", setup=checkpoint_with("badopt", optimizer={"state": {}, "param_groups": []}),
         guard=["{tmp}/runs/badopt"]),
    # --refit (clf/train/refit.py)
    Case("refit-with-no-val", [*TRAIN, "--name", "rn", "--refit", "--no-val"], 2,
         "--refit trains again for the epoch count validation chose, so it needs a validation split; drop --no-val "
         "/ --val-split 0", check=absent("runs/rn")),
    Case("refit-with-val-split-0", [*TRAIN, "--name", "rz", "--refit", "--val-split", "0"], 2,
         "--refit trains again for the epoch count validation chose, so it needs a validation split",
         check=absent("runs/rz")),
    Case("refit-with-folds", [*TRAIN, "--name", "rf", "--refit", "--folds", "2"], 2,
         "--refit with --folds: each fold chooses its own best epoch, so there is no one epoch count to refit for",
         check=absent("runs/rf")),
    Case("resume-no-val-run-with-refit", ["train", "--resume", "{tmp}/runs/nv", "--refit", *RESUME], 2,
         "--refit trains again for the epoch count validation chose, so it needs a validation split",
         setup=no_val_run("nv"),
         guard=["{tmp}/runs/nv"]),
    # k-fold cross-validation (--folds)
    Case("folds-1", [*TRAIN, "--name", "f1", "--folds", "1"], 2,
         "--folds must be >= 2 (each of K folds validates on 1/K of the data), got 1", check=absent("runs/f1")),
    Case("folds-above-the-smallest-class", [*TRAIN, "--name", "f7", "--folds", "7"], 2,
         "--folds 7 needs at least 7 images in every class, but class 'circle' has 6; use --folds 6 or fewer",
         check=absent("runs/f7")),
    Case("folds-with-val-split", [*TRAIN, "--name", "fv", "--folds", "3", "--val-split", "0.3"], 2,
         "--val-split: the folds choose the validation images (fold k validates on the k-th 1/K of the data); "
         "leave out --val-split and --no-val with --folds", check=absent("runs/fv")),
    Case("folds-with-no-val", [*TRAIN, "--name", "fn", "--folds", "3", "--no-val"], 2,
         "--val-split: the folds choose the validation images", check=absent("runs/fn")),
    Case("fold-seed-negative", [*TRAIN, "--name", "fs", "--folds", "2", "--fold-seed", "-1"], 2,
         "--fold-seed must be >= 0 and < 2147483648 (2**31), got -1", check=absent("runs/fs")),
    # issue 24: --fold-seed without --folds was ignored without a word
    Case("fold-seed-without-folds", [*TRAIN, "--name", "fsn", "--fold-seed", "3"], 2,
         "--fold-seed 3 seeds the fold assignment of --folds K, which was not given; add --folds K for "
         "cross-validation, or leave out --fold-seed (--seed seeds the split)", check=absent("runs/fsn")),
    Case("fold-seed-with-refit-without-folds", [*TRAIN, "--name", "fsr", "--refit", "--fold-seed", "0"], 2,
         "--fold-seed 0 seeds the fold assignment of --folds K, which was not given", check=absent("runs/fsr")),
    Case("folds-unknown-arch", [*TRAIN, "--name", "fa", "--folds", "2", "--arch", "nope_net"], 2,
         "unknown architecture 'nope_net'; see `clf models`", check=absent("runs/fa")),
    Case("folds-name-dot-dot", [*TRAIN, "--name", "../fx", "--folds", "2"], 2,
         "--name '../fx': a run name is a plain folder name", check=absent("fx")),
    Case("folds-on-an-existing-group", [*TRAIN, "--name", "grp", "--folds", "2"], 2,
         "runs/grp: fold group already exists; use --resume", setup=fold_group("grp"), guard=["{tmp}/runs/grp"]),
    Case("folds-on-an-existing-run", [*TRAIN, "--name", "done", "--folds", "2"], 2,
         "runs/done: run folder already exists; use --resume", guard=["{run}"]),
    Case("folds-overwrite-unmarked-folder", [*TRAIN, "--name", "thesis2", "--folds", "2", "--overwrite"], 2,
         "runs/thesis2: not a fold group written by clf", guard=["{tmp}/runs/thesis2"],
         setup=lambda p: ((p["tmp"] / "runs" / "thesis2").mkdir(parents=True),
                          (p["tmp"] / "runs" / "thesis2" / "ch1.txt").write_text("years of work"))),
    Case("folds-overwrite-group-holding-a-user-file", [*TRAIN, "--name", "grpu", "--folds", "2", "--overwrite"], 2,
         "runs/grpu/fold-0: holds 1 file(s) clf did not write (notes.txt)",
         setup=fold_group("grpu", user_file="fold-0/notes.txt"), guard=["{tmp}/runs/grpu"]),
    # found in issue 24's work: a run's refit/ (clf's, by its own marker) was called a file clf did not write
    Case("folds-overwrite-a-run-with-its-refit", [*TRAIN, "--name", "rr", "--folds", "2", "--overwrite"], 0, "",
         setup=run_with_refit("rr"), check=replaced_by_a_group("rr")),
    Case("folds-overwrite-a-refit-holding-a-user-file", [*TRAIN, "--name", "rru", "--folds", "2", "--overwrite"], 2,
         "runs/rru/refit: holds 1 file(s) clf did not write (notes.txt)", setup=run_with_refit("rru", user_file=True),
         guard=["{tmp}/runs/rru"]),
    Case("resume-group-with-other-folds", ["train", "--resume", "{tmp}/runs/grpk", "--folds", "3", *RESUME], 2,
         "runs/grpk/group.json: the group has 2 folds with fold seed 0; --folds 3 differs; resume with the group's "
         "own (or leave it out), or start a new group with another --name",
         setup=fold_group("grpk"), guard=["{tmp}/runs/grpk"]),
    Case("resume-group-with-other-fold-seed", ["train", "--resume", "{tmp}/runs/grps", "--fold-seed", "5", *RESUME],
         2, "runs/grps/group.json: the group has 2 folds with fold seed 0; --fold-seed 5 differs",
         setup=fold_group("grps"), guard=["{tmp}/runs/grps"]),
    Case("resume-group-with-another-lr", ["train", "--resume", "{tmp}/runs/grpl", "--lr", "0.5", *RESUME], 2,
         "runs/grpl/group.json: --lr 0.5 differs from the fold group's 0.003", setup=fold_group("grpl"),
         guard=["{tmp}/runs/grpl"]),
    Case("resume-group-with-val-split", ["train", "--resume", "{tmp}/runs/grpv", "--val-split", "0.1", *RESUME], 2,
         "--val-split: the folds choose the validation images", setup=fold_group("grpv"), guard=["{tmp}/runs/grpv"]),
    Case("resume-group-damaged-record", ["train", "--resume", "{tmp}/runs/grpd", *RESUME], 2,
         "runs/grpd/group.json: unreadable fold-group record (JSONDecodeError); retrain with --overwrite",
         setup=fold_group("grpd", text='{"kind": "clf-fold-gr'), guard=["{tmp}/runs/grpd"]),
    Case("resume-group-record-of-another-kind", ["train", "--resume", "{tmp}/runs/grpo", *RESUME], 2,
         "runs/grpo/group.json: not a clf fold-group record", setup=fold_group("grpo", text='{"kind": "x"}'),
         guard=["{tmp}/runs/grpo"]),
    Case("resume-group-record-without-settings", ["train", "--resume", "{tmp}/runs/grpn", *RESUME], 2,
         "runs/grpn/group.json: damaged fold-group record (no training settings); retrain with --overwrite",
         setup=fold_group("grpn", text='{"kind": "clf-fold-group", "folds": 2, "fold_seed": 0, '
                                       '"members": ["fold-0", "fold-1"]}'), guard=["{tmp}/runs/grpn"]),
    Case("resume-group-member-outside", ["train", "--resume", "{tmp}/runs/grpx", *RESUME], 2,
         "runs/grpx/group.json: member '../x' is not a folder name inside the group; retrain with --overwrite",
         setup=lambda p: (outside_folder(p), fold_group("grpx", members=["fold-0", "../x"])(p)),
         guard=["{tmp}/runs/grpx", "{tmp}/runs/x"]),
    Case("resume-group-member-absolute", ["train", "--resume", "{tmp}/runs/grpa", *RESUME], 2,
         "member '/etc' is not a folder name inside the group", setup=fold_group("grpa", members=["fold-0", "/etc"]),
         guard=["{tmp}/runs/grpa"]),
    Case("single-run-on-a-group", [*TRAIN, "--name", "grpr"], 2,
         "runs/grpr: is a fold group (clf train --folds); continue it with --resume", setup=fold_group("grpr"),
         guard=["{tmp}/runs/grpr"]),
    Case("single-run-overwriting-a-group", [*TRAIN, "--name", "grpw", "--overwrite"], 2,
         "runs/grpw: is a fold group (clf train --folds); continue it with --resume", setup=fold_group("grpw"),
         guard=["{tmp}/runs/grpw"]),
    Case("resume-single-run-with-folds", ["train", "--resume", "{run}", "--folds", "2", *RESUME], 2,
         "runs/done: not a fold group (no group.json); train one with `clf train --folds K`", guard=["{run}"]),
    # --pretrained-path, --layer-decay, --freeze-epochs: refused before any run folder is made
    Case("pretrained-path-missing", [*TRAIN, "--name", "ptm", "--pretrained-path", "{tmp}/nope.pt"], 2,
         "nope.pt: weights file not found; check --pretrained-path", check=absent("runs/ptm")),
    Case("pretrained-path-garbage", [*TRAIN, "--name", "ptg", "--pretrained-path", "{tmp}/garbage.pt"], 2,
         "garbage.pt: cannot read the weights (corrupt, truncated or not a PyTorch file)",
         setup=a_file("garbage.pt"), check=absent("runs/ptg")),
    Case("pretrained-path-other-arch", [*TRAIN, "--name", "pta", "--arch", "alexnet", "--img-size", "64",
                                        "--pretrained-path", "{run}/best.pt"], 2,
         "runs/done/best.pt: was trained as arch 'cnn', not 'alexnet'; use --arch cnn", guard=["{run}"],
         check=absent("runs/pta")),
    Case("pretrained-path-and-pretrained", [*TRAIN, "--pretrained", "--pretrained-path", "{run}/best.pt"], 2,
         "--pretrained and --pretrained-path both say where the weights come from; choose one"),
    Case("freeze-epochs-all-epochs", [*TRAIN, "--freeze-epochs", "1", "--pretrained-path", "{run}/best.pt"], 2,
         "--freeze-epochs 1 must be less than --epochs 1: the whole model trains after the frozen epochs"),
    Case("freeze-epochs-without-weights", [*TRAIN, "--epochs", "2", "--freeze-epochs", "1"], 2,
         "--freeze-epochs trains the new head over pretrained weights; add --pretrained-path FILE or --pretrained"),
    Case("layer-decay-0", [*TRAIN, "--layer-decay", "0"], 2, "--layer-decay must be > 0 and <= 1 (e.g. 0.75), got 0.0"),
    Case("resume-with-another-pretrained-path", ["train", "--resume", "{run}", "--epochs", "2",
                                                 "--pretrained-path", "{run}/last.pt", *RESUME], 2,
         "differs from the checkpoint's None; a resumed run keeps its training settings", guard=["{run}"]),
    # clf train --config FILE
    Case("config-missing", [*CONFIG, "{tmp}/configs/nope.yaml", *FAST], 2,
         "configs/nope.yaml: no such config file; --config takes a .yaml, .yml or .toml file of train settings, "
         "or a run's config.json"),
    Case("config-fifo", [*CONFIG, "{tmp}/configs/fifo.yaml", *FAST], 2, "configs/fifo.yaml: not a regular file; "
         "--config takes", setup=config_special("fifo.yaml", "fifo")),
    Case("config-folder", [*CONFIG, "{tmp}/configs/dir.toml", *FAST], 2, "configs/dir.toml: a folder, not a file;",
         setup=config_special("dir.toml", "dir")),
    Case("config-too-large", [*CONFIG, "{tmp}/configs/big.yaml", *FAST], 2,
         "configs/big.yaml: 2097152 bytes, more than a config file of 1048576 bytes",
         setup=config_file("big.yaml", b"#" * 2**21)),
    Case("config-not-utf8", [*CONFIG, "{tmp}/configs/latin.yaml", *FAST], 2, "configs/latin.yaml: not UTF-8 text",
         setup=config_file("latin.yaml", b"name: caf\xe9\n")),
    Case("config-extension", [*CONFIG, "{tmp}/configs/recipe.txt", *FAST], 2,
         "configs/recipe.txt: --config takes a .yaml, .yml or .toml file of train settings, or a run's config.json, "
         "not .txt", setup=config_file("recipe.txt", "epochs: 1\n")),
    Case("config-invalid-yaml", [*CONFIG, "{tmp}/configs/broken.yaml", *FAST], 2,
         "configs/broken.yaml: not valid YAML at line 2 (mapping values are not allowed here)",
         setup=config_file("broken.yaml", "arch: cnn\nepochs: 1: 2\nlr: 0.1\n")),
    Case("config-invalid-toml", [*CONFIG, "{tmp}/configs/broken.toml", *FAST], 2,
         "configs/broken.toml: not valid TOML: Invalid value (at line 2, column 10)",
         setup=config_file("broken.toml", 'arch = "cnn"\nepochs = \n')),
    Case("config-not-a-mapping", [*CONFIG, "{tmp}/configs/list.yml", *FAST], 2,
         "configs/list.yml: the file must hold key: value settings at its top level, not a list",
         setup=config_file("list.yml", "- epochs\n- 1\n")),
    Case("config-unknown-key", [*CONFIG, "{tmp}/configs/typo.yaml", *FAST], 2,
         "configs/typo.yaml: unknown key 'epoch'; did you mean 'epochs'?",
         setup=config_file("typo.yaml", "epoch: 3\n")),
    Case("config-unknown-key-far-from-all", [*CONFIG, "{tmp}/configs/far.toml", *FAST], 2,
         "configs/far.toml: unknown key 'zzzz'; the keys are clf train's option names (see clf train --help)",
         setup=config_file("far.toml", "zzzz = 1\n")),
    Case("config-key-twice", [*CONFIG, "{tmp}/configs/twice.yaml", *FAST], 2,
         "configs/twice.yaml: 'batch_size' is given twice (as batch_size and batch-size); keep one",
         setup=config_file("twice.yaml", "batch_size: 4\nbatch-size: 8\n")),
    Case("config-wrong-type", [*CONFIG, "{tmp}/configs/type.yaml", *FAST], 2,
         "configs/type.yaml: 'epochs' must be an integer, got 'ten' (str)",
         setup=config_file("type.yaml", "epochs: ten\n")),
    Case("config-bool-for-a-number", [*CONFIG, "{tmp}/configs/bool.toml", *FAST], 2,
         "configs/bool.toml: 'lr' must be a number, got True (bool)", setup=config_file("bool.toml", "lr = true\n")),
    Case("config-null-for-a-string", [*CONFIG, "{tmp}/configs/null.yaml", *FAST], 2,
         "configs/null.yaml: 'arch' must be a string, got None (NoneType)",
         setup=config_file("null.yaml", "arch: null\n")),
    Case("config-value-out-of-range", [*CONFIG, "{tmp}/configs/lr.yaml", *FAST], 2, "--lr must be >= 0",
         setup=config_file("lr.yaml", "data: {data}\nlr: -1\n")),
    Case("config-set-by-clf", [*CONFIG, "{tmp}/configs/fold.yaml", *FAST], 2,
         "configs/fold.yaml: 'fold' is set by clf on the runs it makes, not by a config file; leave it out",
         setup=config_file("fold.yaml", "fold: 1\n")),
    Case("config-command-line-only", [*CONFIG, "{tmp}/configs/resume.yaml", *FAST], 2,
         "configs/resume.yaml: 'resume' is a command-line option of clf train, not a setting; give --resume on the "
         "command line", setup=config_file("resume.yaml", "resume: runs/x\n")),
    Case("config-without-data", [*CONFIG, "{tmp}/configs/nodata.yaml", *FAST], 2, "clf train needs DATA",
         setup=config_file("nodata.yaml", "epochs: 1\n")),
    Case("config-json-not-a-run-config", [*CONFIG, "{tmp}/configs/mine.json", *FAST], 2,
         "configs/mine.json: not a clf run config (no \"train\" settings)",
         setup=config_file("mine.json", '{{"mine": 1}}')),
    Case("config-json-from-a-newer-clf", [*CONFIG, "{tmp}/configs/newer/config.json", *FAST], 2,
         "configs/newer/config.json: written by clf 9.0.0 with settings this clf 0.1.0 does not know (future_setting); "
         "upgrade clf to replay it", setup=newer_run_config),
    Case("config-replay-onto-its-own-run", [*CONFIG, "{run}/config.json", "--name", "done", *FAST], 2,
         "runs/done: run folder already exists", guard=["{run}"]),
    # clf runs
    Case("runs-empty-folder", ["runs", "{tmp}/norun"], 2, "norun: no training runs found",
         setup=runs_folder("norun", None)),
    Case("runs-missing-folder", ["runs", "{tmp}/nowhere"], 2, "nowhere: no training runs found"),
    Case("runs-empty-string", ["runs", ""], 2, "ROOT is empty; give the folder holding run folders (default: runs)"),
    Case("runs-config-is-a-list", ["runs", "{tmp}/runslist"], 0, "", setup=runs_folder("runslist", "[1, 2]")),
    Case("runs-config-is-null", ["runs", "{tmp}/runsnull"], 0, "", setup=runs_folder("runsnull", "null")),
    Case("runs-config-is-garbage", ["runs", "{tmp}/runsjunk"], 0, "", setup=runs_folder("runsjunk", "{not json")),
    # clf models
    Case("models-img-size-0", ["models", "cnn", "--params", "--img-size", "0"], 2, "--img-size must be >= 1, got 0"),
    Case("models-num-classes-0", ["models", "cnn", "--params", "--num-classes", "0"], 2,
         "--num-classes must be >= 1, got 0"),
    Case("models-img-size-100000", ["models", "cnn", "--params", "--img-size", "100000"], 2,
         "--img-size must be <= 4096, got 100000"),
    Case("models-num-classes-1e9", ["models", "cnn", "--params", "--num-classes", "1000000000"], 2,
         "--num-classes must be <= 100000, got 1000000000"),
    Case("models-no-match", ["models", "zzz*"], 2, "no architecture matches 'zzz*'"),
    Case("models-size-too-small", ["models", "cnn", "--params", "--img-size", "8"], 2,
         "img_size 8 does not work with arch 'cnn'"),
    Case("models-params-on-too-many", ["models", "--params"], 2, "--params would build"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_train")
    data = make_data(tmp / "sample", n_per_class=6)
    result = clf("train", data, *FAST, "--lr", "0.003", "--out", tmp / "runs", "--name", "done")
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "data": data, "run": tmp / "runs" / "done"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, places, monkeypatch):
    patch = PATCHES.get(case.id)
    if patch is not None:
        patch(monkeypatch)
    result = run_case(case, places)
    if case.id.startswith("runs-config"):
        assert "WARNING" in result.output and "unreadable run folder" in result.output
        assert "│ good" in result.output


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert os.sep == "/"  # the phrases use "/"


@pytest.fixture
def small_tmpfs(places, tmp_path):
    """A real tmpfs (root only; skipped where mounting is not permitted) with room for one epoch's files of the
    fixture's run (best.pt, last.pt, small files) but not for the temp file of the next epoch's last.pt."""
    import subprocess

    size = os.path.getsize(places["run"] / "last.pt")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    options = f"size={(size * 5 // 2 + 200_000) // 1024}k"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_tmpfs_while_last_pt_is_written(places, small_tmpfs, monkeypatch):
    """Issue 24 item 6 on a real full disk: one line with the path and the free space, exit 2, last.pt unchanged."""
    from clf.train import trainer as trainer_module

    before: list[dict[str, str]] = []
    real = trainer_module.save_checkpoint

    def save(state, path):
        before.append(tree_digest(path))
        return real(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    result = clf("train", places["data"], *FAST, "--epochs", "2", "--out", small_tmpfs / "runs", "--name", "full")
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {small_tmpfs}/runs/full/last.pt: disk full ("), \
        result.output
    assert " free); free some space or write elsewhere" in errors[0]
    last = small_tmpfs / "runs" / "full" / "last.pt"
    assert len(before) == 2 and tree_digest(last) == before[-1]  # the failed save left epoch 1's file as it was
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not list(last.parent.glob(".clf-*.tmp"))
