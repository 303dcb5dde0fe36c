"""Training a multi-label model end to end: sigmoid losses on multi-hot targets, the multi-label metric picking
best.pt, per-class thresholds tuned on validation and recorded in best.pt and config.json; fold groups and refits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from multilabel_helpers import CLASSES, make_multilabel_set, train_on
from train_helpers import TINY, load

from clf.config import Preprocess
from clf.data.torch_dataset import ImageDataset
from clf.train.fit import fit, resolve_config

ML = dict(TINY, task="multilabel", epochs=2, labels_csv="labels.csv")  # the set itself comes from make_set


@pytest.fixture
def multilabel_data(tmp_path, monkeypatch):
    """(the data folder, its multi-label set), which training reads."""
    labelled = make_multilabel_set(tmp_path / "data")
    train_on(labelled, monkeypatch)
    return tmp_path / "data", labelled


def train_ml(data, out, name, **options):
    cfg, _ = resolve_config({**ML, "data": str(data), "out": str(out), "name": name, **options})
    return fit(cfg)


def test_the_dataset_yields_float_multi_hot_targets(tmp_path):
    labelled = make_multilabel_set(tmp_path / "d", n=4)
    dataset = ImageDataset(labelled.paths, labelled.labels, Preprocess(size=(32, 32)), targets=labelled.targets)
    image, target = dataset[0]
    assert image.shape == (3, 32, 32) and target.dtype == torch.float32
    assert target.tolist() == labelled.targets[0].tolist()


def test_a_multilabel_run_records_its_task_metric_and_tuned_thresholds(multilabel_data, tmp_path):
    data, labelled = multilabel_data
    result = train_ml(data, tmp_path / "runs", "ml", loss="asl", mixup=0.2)
    run = result.run_dir
    best = load(run / "best.pt")
    assert best["config"]["task"] == "multilabel" and best["config"]["metric"] == "f1_macro"
    thresholds = best["thresholds"]
    assert isinstance(thresholds, list) and len(thresholds) == len(CLASSES)
    assert all(isinstance(t, float) and 0.0 < t < 1.0 for t in thresholds)
    assert result.thresholds == thresholds
    config = json.loads((run / "config.json").read_text())
    assert config["thresholds"] == thresholds and config["train"]["task"] == "multilabel"
    rows = load(run / "last.pt")["history"]
    assert all(math.isfinite(row["val_metric"]) and 0.0 <= row["val_acc"] <= 1.0 for row in rows)
    assert "thresholds" not in load(run / "last.pt")


def test_the_thresholds_maximise_each_classs_f1_on_the_best_checkpoints_validation(multilabel_data, tmp_path):
    from clf.data.split import labelled_split
    from clf.metrics_multilabel import f1_per_class
    from clf.tasks import MULTILABEL
    from clf.thresholds import tune_thresholds
    from clf.train.fold_scoring import predict_probabilities

    data, labelled = multilabel_data
    result = train_ml(data, tmp_path / "runs", "ml", epochs=1)
    best = load(result.run_dir / "best.pt")
    _, val_idx = labelled_split(labelled, ML.get("val_split", 0.2), 0)
    val = labelled.subset(val_idx)
    probs = predict_probabilities(best, val.paths, torch.device("cpu"), task=MULTILABEL)
    assert best["thresholds"] == pytest.approx(tune_thresholds(val.targets, probs).tolist())
    assert f1_per_class(val.targets, probs, np.array(best["thresholds"])).mean() >= \
        f1_per_class(val.targets, probs).mean()


def test_without_validation_every_threshold_is_one_half_and_a_line_says_so(multilabel_data, tmp_path, caplog):
    data, _ = multilabel_data
    result = train_ml(data, tmp_path / "runs", "noval", val_split=0.0, epochs=1)
    assert load(result.run_dir / "best.pt")["thresholds"] == [0.5] * len(CLASSES)
    assert "no validation images to tune the per-class thresholds on: every class keeps 0.5" in caplog.text


def test_class_weights_auto_are_positive_weights_from_the_training_split(multilabel_data, tmp_path):
    from clf.train.class_weights import positive_weights

    data, labelled = multilabel_data
    result = train_ml(data, tmp_path / "runs", "weighted", class_weights="auto", epochs=1)
    weights = load(result.run_dir / "best.pt")["config"]["resolved_class_weights"]
    assert len(weights) == len(CLASSES) and all(w > 0 for w in weights)
    targets = np.array([[1, 0], [1, 0], [1, 1], [1, 0]], dtype=np.uint8)
    assert positive_weights(targets) == (pytest.approx(0.01), 3.0)  # no negatives: the floor 1/100


def test_a_fold_group_tunes_thresholds_on_the_out_of_fold_scores(multilabel_data, tmp_path):
    from clf.data.folds import read_group, read_oof
    from clf.thresholds import tune_thresholds
    from clf.train.folds import fit_group

    data, labelled = multilabel_data
    given = {**ML, "epochs": 1, "data": str(data), "out": str(tmp_path / "runs"), "name": "g", "folds": 2}
    result = fit_group(given)
    group = read_group(result.group_dir)
    oof = read_oof(result.group_dir / "oof.csv")
    assert oof.targets().tolist() == labelled.targets.tolist()
    assert oof.labels[0] == " ".join(c for c, on in zip(CLASSES, labelled.targets[0]) if on)
    assert ((oof.probs > 0) & (oof.probs < 1)).all()  # sigmoid scores, rows not summing to 1
    assert group.thresholds == pytest.approx(tune_thresholds(oof.targets(), oof.probs).tolist(), abs=1e-5)
    assert group.cv["metric"] == "f1_macro" and math.isfinite(group.cv["oof_metric"])
    assert 0.0 <= group.cv["oof_acc"] <= 1.0 and math.isfinite(group.cv["oof_log_loss"])


def test_clf_train_task_multilabel_prints_the_thresholds(multilabel_data, tmp_path):
    from cli_helpers import clf

    data, _ = multilabel_data
    result = clf("train", data, "--task", "multilabel", "--labels-csv", data / "labels.csv",
                 "--loss", "bce", "--arch", "cnn", "--img-size", "32",
                 "--epochs", "1", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--ema", "0", "--quiet",
                 "--out", tmp_path / "runs", "--name", "cli")
    assert result.exit_code == 0, result.output
    thresholds = load(tmp_path / "runs" / "cli" / "best.pt")["thresholds"]
    assert "thresholds " + " ".join(f"{t:.3g}" for t in thresholds) in result.output


def test_a_refit_takes_the_thresholds_its_validated_run_tuned(multilabel_data, tmp_path):
    from clf.train.refit import fit_with_refit

    data, _ = multilabel_data
    given = {**ML, "epochs": 1, "data": str(data), "out": str(tmp_path / "runs"), "name": "r", "refit": True}
    result = fit_with_refit(given)
    validated = load(result.validated.run_dir / "best.pt")["thresholds"]
    assert load(result.refit.run_dir / "best.pt")["thresholds"] == validated
    assert result.refit.thresholds == validated


@pytest.mark.parametrize("preset", ["default", "strong"])  # the presets with a crop ("light" is a flip alone)
def test_a_multilabel_run_leaves_the_random_crop_out_unless_crop_scale_is_given(preset):
    from clf.config import TrainConfig
    from clf.data.augment import RandomResizedCrop
    from clf.train.build import augment_pipeline

    def ops(**given) -> list[type]:
        return [type(op) for op in augment_pipeline(TrainConfig(augment=preset, **given)).ops]

    assert RandomResizedCrop in ops()  # single-label: the preset's crop
    assert RandomResizedCrop not in ops(task="multilabel", labels_csv="x.csv")
    assert RandomResizedCrop in ops(task="multilabel", labels_csv="x.csv", crop_scale=0.6)
