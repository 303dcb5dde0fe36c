"""The scoring of benchmarks/multilabel.py and benchmarks/imbalance.py: F1s equal to scikit-learn's, the post-hoc
logit adjustment, and the cut copy of a benchmark (seeded, rebuilt only when its parameters change)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_helpers import load_benchmark


def test_the_multilabel_f1s_equal_scikit_learns():
    metrics = pytest.importorskip("sklearn.metrics")
    multilabel = load_benchmark("multilabel")
    rng = np.random.default_rng(0)
    for _ in range(10):
        truth, predicted = rng.random((30, 5)) < 0.3, rng.random((30, 5)) < 0.3
        truth[:, 2] = predicted[:, 2] = False  # a class nobody holds or predicts
        truth[3] = predicted[3] = False  # an image with no tag, none predicted
        per_class, micro, samples = multilabel.f1_scores(truth, predicted)
        assert per_class.mean() == pytest.approx(metrics.f1_score(truth, predicted, average="macro", zero_division=0))
        assert micro == pytest.approx(metrics.f1_score(truth, predicted, average="micro", zero_division=0))
        assert samples == pytest.approx(metrics.f1_score(truth, predicted, average="samples", zero_division=0))


def test_logit_adjustment_divides_out_the_training_prior():
    imbalance = load_benchmark("imbalance")
    probabilities = {"x": {"a": 0.6, "b": 0.4}, "y": {"a": 0.95, "b": 0.05}}
    assert imbalance.logit_adjusted(probabilities, {"a": 0.5, "b": 0.5}) == {"x": "a", "y": "a"}
    assert imbalance.logit_adjusted(probabilities, {"a": 0.9, "b": 0.1}) == {"x": "b", "y": "a"}  # 0.4/0.1 > 0.6/0.9
    recall = imbalance.per_class_recall({"x": "b", "y": "a", "z": "b"}, {"x": "b", "y": "a", "z": "a"})
    assert recall == {"a": 1.0, "b": 0.5}


def test_the_cut_copy_keeps_five_percent_of_one_class_and_is_rebuilt_only_when_asked(tmp_path):
    imbalance = load_benchmark("imbalance")
    bench = tmp_path / "toy"
    for name in ("a", "b"):
        (bench / "train" / name).mkdir(parents=True)
        for i in range(40):
            (bench / "train" / name / f"{name}_{i:04d}.png").write_bytes(b"x")
    (bench / "test").mkdir()
    (bench / "params.json").write_text(json.dumps({"bench": "toy"}))
    out = imbalance.cut_dataset(bench, tmp_path / "cut", "a", 0.05, data_seed=0)
    kept = sorted(p.name for p in (out / "train" / "a").iterdir())
    assert len(kept) == 2 and len(list((out / "train" / "b").iterdir())) == 40
    assert imbalance.training_prior(out) == {"a": 2 / 42, "b": 40 / 42}
    marker = out / "kept.txt"
    marker.write_text("kept")
    assert imbalance.cut_dataset(bench, tmp_path / "cut", "a", 0.05, data_seed=0) == out and marker.exists()
    again = imbalance.cut_dataset(bench, tmp_path / "cut", "a", 0.05, data_seed=1)
    assert not marker.exists() and len(list((again / "train" / "a").iterdir())) == 2
    assert len(list((bench / "train" / "a").iterdir())) == 40  # the benchmark itself is untouched
