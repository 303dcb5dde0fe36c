"""clf lr-find: the sweep, its stop at divergence, fastai's valley, the plot it may write; no run folder."""

from __future__ import annotations

import math
import re

import pytest
from cli_helpers import clf, error_line
from export_helpers import make_data

from clf.config import TrainConfig
from clf.train.lr_find import DIVERGENCE, is_clf_plot, lr_find, sweep_lrs, valley

TINY = ("--arch", "cnn", "--img-size", "16", "--workers", "0")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("sample"), per_class=6)


def test_the_sweep_is_exponential_from_start_to_end():
    lrs = sweep_lrs(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert [b / a for a, b in zip(lrs, lrs[1:])] == pytest.approx([10.0] * 6)


def test_valley_is_two_thirds_down_the_longest_fall():
    lrs = [float(i) for i in range(10)]
    losses = [5, 5, 4, 3, 2, 1, 0.5, 0.6, 3, 9]  # falls from index 1 to 6
    assert valley(lrs, losses) == 3.0  # start 0 (before the fall), 6 long: 0 + 2 + 1


def test_cli_prints_a_suggestion_inside_the_sweep_writes_the_plot_and_no_run_folder(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = clf("lr-find", data, *TINY, "--steps", "20", "--start-lr", "1e-5", "--end-lr", "1e-2")
    assert result.exit_code == 0, result.output
    found = re.search(r"suggested lr (\S+) \(valley; 20 steps from 1\.0e-05 to 1\.0e-02\)", result.output)
    assert found, result.output
    assert 1e-5 <= float(found.group(1)) <= 1e-2
    assert is_clf_plot(tmp_path / "lr_find.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find.png"]  # no runs/ folder
    again = clf("lr-find", data, *TINY, "--steps", "5", "--start-lr", "1e-5", "--end-lr", "1e-4")
    assert again.exit_code == 0, again.output  # its own plot: replaced


def test_the_library_returns_one_point_per_step(tmp_path, data):
    result = lr_find(TrainConfig(data=str(data), arch="cnn", img_size=16, workers=0), tmp_path / "p.png",
                     start_lr=1e-5, end_lr=1e-3, steps=12)
    assert len(result.lrs) == len(result.losses) == 12 and not result.diverged
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]


def test_a_diverging_loss_stops_the_sweep(tmp_path, data):
    result = lr_find(TrainConfig(data=str(data), arch="cnn", img_size=16, workers=0, optimizer="sgd"),
                     tmp_path / "p.png", start_lr=1e-3, end_lr=1e6, steps=60)
    assert result.diverged and len(result.losses) < 60
    assert all(math.isfinite(value) for value in result.losses)  # a non-finite loss ends it, unrecorded
    # the last point recorded is the one past DIVERGENCE x the best, unless a non-finite loss came first
    assert result.losses[-1] > DIVERGENCE * min(result.losses) or result.lrs[-1] < 1e6


def test_a_file_clf_did_not_write_is_not_replaced(tmp_path, data):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"\x89PNG not clf's")
    result = clf("lr-find", data, *TINY, "--steps", "5", "-o", mine)
    assert result.exit_code == 2
    assert error_line(result) == (f"error: {mine}: exists and is not a plot clf lr-find wrote; clf replaces only its "
                                  "own: choose another -o or remove the file")
    assert mine.read_bytes() == b"\x89PNG not clf's"


def test_bad_sweep_settings_are_one_line(tmp_path, data):
    result = clf("lr-find", data, *TINY, "--start-lr", "1", "--end-lr", "0.1", "-o", tmp_path / "p.png")
    assert result.exit_code == 2
    assert error_line(result) == "error: --start-lr and --end-lr must satisfy 0 < start < end, got 1 and 0.1"
