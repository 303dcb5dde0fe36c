"""`clf tune`: bad inputs (one line, exit 2, before Ray starts), the search space parser, and one live search on
the sample competition, run as a user runs it (a subprocess whose process tree is listed from /proc):

4 tiny trials over an lr grid whose last value cannot learn (1e-7), two side by side, ASHA with grace 1: SIGTERM once
a third trial starts stops everything (exit 143, nothing of the tree left, search.json says interrupted); while it
ran, every listening socket of the tree was on loopback; `--resume` continues (the trials' histories go on), the
hopeless trial is stopped after one epoch, and best.yaml retrains with `clf train --config` to its trial's history.
One test for the live part: pytest-xdist would otherwise start two Ray instances on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import clf, error_line
from proc_helpers import alive, cmdline, is_loopback, listening_sockets, process_tree

from clf.errors import EXIT_TERMINATED, ClfError
from clf.train.history import read_history_csv
from clf.tune.space import default_space, parse_space

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="needs the tune extra: pip install 'clf[tune]'")
LRS = "3e-3,2e-3,1e-3,1e-7"
STOP_TIMEOUT_S = 60
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune-data")
    assert clf("sample-data", root / "comp", "--per-class", "40", "--size", "32", "--test", "4").exit_code == 0
    return root / "comp" / "train"


@pytest.mark.parametrize("args, expected", [
    (["--space", "lr"], "error: --space 'lr': not KEY=KIND:ARGS; give KEY=KIND:ARGS with KIND loguniform:LO:HI, "
                        "uniform:LO:HI, int:LO:HI, choice:A,B,C or grid:A,B,C"),
    (["--space", "lrr=loguniform:1e-4:1e-2"], "error: --space 'lrr=loguniform:1e-4:1e-2': unknown setting 'lrr' "
                                              "(did you mean lr?); the keys are `clf train` option names"),
    (["--space", "augment=choice:"], "error: --space 'augment=choice:': an empty choice value; give choice:A,B,C"),
    (["--space", "augment=choice:none,,light"], "error: --space 'augment=choice:none,,light': an empty choice "
                                                "value; give choice:A,B,C"),
    (["--space", "lr=loguniform:1e-2:1e-4"], "error: --space 'lr=loguniform:1e-2:1e-4': LO must be below HI, got "
                                             "0.01 and 0.0001"),
    (["--space", "augment=choice:wild"], "error: --space 'augment=choice:wild': --augment must be one of none, "
                                         "light, default, strong, got 'wild'"),
    (["--space", "lr=grid:1e-3,1e-2", "--trials", "3"], "error: --trials 3: the grid axes of --space make 2 "
                                                        "combinations; give a multiple of 2 (e.g. --trials 2)"),
    (["--space", "lr=choice:1e-3", "--lr", "0.1"], "error: lr: both fixed by a flag and searched in --space; give "
                                                   "it one way"),
    (["--host", "0.0.0.0"], "error: --host 0.0.0.0: a local clf tune binds Ray to loopback only (127.0.0.1); to "
                            "use other machines, start a Ray cluster there and give its --address"),
    (["--time-budget", "soon"], "error: --time-budget 'soon': give a duration such as 20m, 90s or 1.5h"),
    (["--trials", "0"], "error: --trials must be >= 1, got 0"),
])
def test_bad_inputs_are_one_line_and_exit_2(data, tmp_path, args, expected):
    result = clf("tune", data, "--arch", "cnn", "--out", tmp_path / "runs", *args)
    assert result.exit_code == 2, result.output
    assert error_line(result) == expected
    assert not (tmp_path / "runs").exists()  # refused before any folder or Ray


def test_space_file_toml_and_yaml(tmp_path):
    toml = tmp_path / "space.toml"
    toml.write_text('lr = "loguniform:1e-4:1e-2"\naugment = ["none", "light"]\nlabel-smoothing = "grid:0,0.1"\n')
    yaml = tmp_path / "space.yaml"
    yaml.write_text('lr: "loguniform:1e-4:1e-2"\naugment: [none, light]\nlabel_smoothing: "grid:0,0.1"\n')
    expected = ["lr=loguniform:0.0001:0.01", "augment=choice:none,light", "label_smoothing=grid:0,0.1"]
    assert [d.describe() for d in parse_space(str(toml))] == expected
    assert [d.describe() for d in parse_space(str(yaml))] == expected
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = 3\n")
    with pytest.raises(ClfError, match=r"bad.toml: lr: give KIND:ARGS text or a list of values, not int"):
        parse_space(str(bad))


def test_default_space_drops_what_a_flag_fixes():
    keys = [d.key for d in default_space("cnn", {})]
    assert keys == ["lr", "augment", "label_smoothing", "batch_size", "img_size"]
    assert [d.key for d in default_space("cnn", {"lr": 1e-3, "img_size": 32})] == ["augment", "label_smoothing",
                                                                                   "batch_size"]
    assert default_space("cnn", {})[-1].values == (48, 64)  # cnn's default 64 px and 3/4 of it


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists sockets and processes through /proc")
def test_tune_live_stop_resume_best_config(data, tmp_path):
    out = tmp_path / "runs"
    search = out / "s"
    args = ["tune", str(data), "--arch", "cnn", "--img-size", "32", "--epochs", "3", "--batch-size", "8",
            "--trials", "4", "--space", f"lr=grid:{LRS}", "--out", str(out), "--name", "s"]
    log = tmp_path / "first.log"
    proc = _start(args, log)
    try:
        tree = _wait_for_third_trial(proc, search, log)
        before = {name: read_history_csv(search / name / "history.csv") for name in ("trial-0", "trial-1")}
        _check_only_loopback_listeners(tree)
        proc.send_signal(signal.SIGTERM)
        assert _wait(proc, log) == EXIT_TERMINATED, log.read_text()
        assert "terminated (SIGTERM)" in log.read_text() and "Traceback" not in log.read_text()
        _check_nothing_left(tree)
    finally:
        _kill(proc)
    record = json.loads((search / "search.json").read_text())
    assert record["state"] == "interrupted"
    assert before["trial-0"] and before["trial-1"]

    log = tmp_path / "resume.log"
    proc = _start(["tune", "--resume", str(search)], log)
    try:
        assert _wait(proc, log, RUN_TIMEOUT_S) == 0, log.read_text()
    finally:
        _kill(proc)
    record = json.loads((search / "search.json").read_text())
    assert record["state"] == "done"
    trials = {t["name"]: t for t in record["trials"]}
    assert sorted(trials) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    for name, rows in before.items():  # continued (or kept, once ended), never trained again from the start
        assert read_history_csv(search / name / "history.csv")[:len(rows)] == rows
    assert trials["trial-3"]["params"] == {"lr": 1e-7}
    assert trials["trial-3"]["epochs"] == 1 and trials["trial-3"]["stopped_early"], record  # ASHA, grace 1
    best = record["best"]
    assert trials[best]["objective"] == max(t["objective"] for t in trials.values())
    assert trials[best]["epochs"] == 3
    _check_best_config_retrains_to_its_trial(search, best, out)
    listing = clf("runs", out)
    assert listing.exit_code == 0, listing.output
    assert "search" in listing.output and best in listing.output


def _check_best_config_retrains_to_its_trial(search: Path, best: str, out: Path) -> None:
    """Same settings, same seed, same thread count (1, as a --parallel trial): the same epochs. Accuracies equal
    exactly; losses within float noise only (rel 1e-4): a thread count that differed (another machine, --sequential)
    would sum the convolutions' partial results in another order, and nothing else may differ."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial did
    try:
        result = clf("train", "--config", search / "best.yaml", "--out", out, "--name", "again", "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    trial = read_history_csv(search / best / "history.csv")
    again = read_history_csv(out / "again" / "history.csv")
    assert [r["val_acc"] for r in again] == [r["val_acc"] for r in trial]
    for mine, theirs in zip(again, trial):
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "clf", *args], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _wait_for_third_trial(proc: subprocess.Popen, search: Path, log: Path) -> list[int]:
    """Until trial-2 has written its config (one of the first two has ended: finished or stopped by ASHA, and Ray
    and Tune run trials); returns the process tree then."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if (search / "trial-2" / "config.json").is_file():
            return process_tree(proc.pid)
        time.sleep(0.1)
    pytest.fail(f"clf tune exited ({proc.returncode}) or took too long before trial-2 started:\n{log.read_text()}")


def _check_only_loopback_listeners(tree: list[int]) -> None:
    listeners = listening_sockets(tree)
    assert len(listeners) >= 4, listeners  # GCS, raylet, agents, workers: an empty list would prove nothing
    exposed = [entry for entry in listeners if not is_loopback(entry[2])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    assert not [pid for pid in tree if "dashboard/dashboard.py" in cmdline(pid)]


def _check_nothing_left(tree: list[int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"left running: {[cmdline(pid) for pid in left]}"


def _wait(proc: subprocess.Popen, log: Path, timeout: float = STOP_TIMEOUT_S) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"clf tune still running after {timeout} s:\n{log.read_text()}")


def _kill(proc: subprocess.Popen) -> None:
    """A failed test leaves nothing: the whole session clf tune leads (Ray's processes stay in it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
