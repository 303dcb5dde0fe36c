"""What a search leaves in runs/NAME besides its trials: search.json (the search's settings, state and trials),
best.yaml (the best trial's recipe, for `clf train --config`) and the equivalent `clf train` command line.

    runs/NAME/search.json    {"format", "arch", "fixed", "space", "tune", "objective", "state", "trials",
                              "best", "command"}
    runs/NAME/best.yaml      the best trial's settings (TrainConfig names), as `clf train --config` reads them
    runs/NAME/trial-k/       ordinary clf runs (config.json, history.csv, best.pt, ...)
    runs/NAME/tune/          Ray Tune's experiment state (what `clf tune --resume` restores)
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_text
from clf.config import TrainConfig, option_flag
from clf.errors import ClfError, one_line
from clf.run_files import CONFIG_FILE, HISTORY_FILE, read_config, train_settings
from clf.train.config_file import read_config_file
from clf.train.history import best_row, epoch_acc, read_history_csv
from clf.tune.space import Dimension
from clf.tune.trial import TRIAL_PREFIX

SEARCH_FILE = "search.json"
BEST_CONFIG = "best.yaml"
TUNE_DIR = "tune"  # Ray Tune's own files
SEARCH_FORMAT = 1
RUNNING, INTERRUPTED, DONE = "running", "interrupted", "done"
NOT_IN_BEST = ("out",)  # the retrained run goes where --out says (default runs/), not into the search


@dataclass(frozen=True)
class TrialSummary:
    """One trial as its run folder tells it: parameters, best objective, epochs trained."""

    name: str
    params: dict[str, Any]
    objective: float | None
    epochs: int
    planned_epochs: int
    path: Path

    @property
    def stopped_early(self) -> bool:
        return 0 < self.epochs < self.planned_epochs


def write_search(search_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(search_dir / SEARCH_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_search(search_dir: Path) -> dict[str, Any]:
    """search.json of a search folder.

    Raises:
        ClfError: not a search folder, or an unreadable / foreign record.
    """
    path = Path(search_dir) / SEARCH_FILE
    if not path.is_file():
        raise ClfError(f"{search_dir}: not a clf tune search (no {SEARCH_FILE}); give the folder `clf tune` wrote "
                       "(runs/NAME)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClfError(f"{path}: unreadable search record ({one_line(exc)})") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), int) or record["format"] > SEARCH_FORMAT:
        raise ClfError(f"{path}: not a search record this clf can read (from a newer clf?)")
    return record


def space_of(record: dict[str, Any]) -> list[Dimension]:
    return [Dimension.from_dict(d) for d in record["space"]]


def trial_summaries(search_dir: Path, record: dict[str, Any]) -> list[TrialSummary]:
    """Every trial that has a run folder, best objective first (no objective: last, by name)."""
    keys = [d["key"] for d in record["space"]]
    metric = record.get("fixed", {}).get("metric") or "accuracy"
    planned = int(record.get("fixed", {}).get("epochs") or TrainConfig().epochs)
    trials = []
    for config in Path(search_dir).glob(f"{TRIAL_PREFIX}*/{CONFIG_FILE}"):
        run_dir = config.parent
        try:
            settings = train_settings(read_config(run_dir))
            rows = read_history_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else []
        except (OSError, ValueError, KeyError, ClfError):  # a trial that has not written its files yet
            continue
        best = best_row(rows, metric)
        trials.append(TrialSummary(run_dir.name, {k: settings.get(k) for k in keys},
                                   None if best is None else epoch_acc(best, metric),
                                   rows[-1]["epoch"] if rows else 0, planned, run_dir))
    return sorted(trials, key=lambda t: (t.objective is None, -(t.objective or 0.0), _index(t.name)))


def write_best_config(search_dir: Path, best: TrialSummary) -> tuple[Path, str]:
    """best.yaml from the best trial's config.json (the recipe `clf train --config` replays), and the same as one
    `clf train` command line (only the settings that differ from the defaults)."""
    import yaml

    settings = {k: v for k, v in read_config_file(best.path / CONFIG_FILE).settings.items() if k not in NOT_IN_BEST}
    settings.update(_precision_as_trained(best.path))
    text = (f"# clf tune: the best trial ({best.name}, objective {best.objective}); "
            f"train it with `clf train --config {search_dir / BEST_CONFIG}`\n")
    path = search_dir / BEST_CONFIG
    atomic_write_text(path, text + yaml.safe_dump(settings, sort_keys=True))
    return path, command_line(settings)


def _precision_as_trained(run_dir: Path) -> dict[str, Any]:
    """--amp as the trial trained: its `--amp auto` probe ran on a machine busy with other trials, and a retrain
    whose probe decides otherwise (bf16 rather than fp32) would not reproduce it. fp32 -> off; bf16 -> on (whose
    channels_last is decided anew)."""
    try:
        precision = train_settings(read_config(run_dir)).get("precision") or ""
    except (OSError, ValueError, KeyError, ClfError):
        return {}
    if precision == "fp32":
        return {"amp": "off"}
    return {"amp": "on"} if precision.startswith("bf16") else {}


def command_line(settings: dict[str, Any]) -> str:
    """`clf train DATA --flag value ...` for the settings that differ from TrainConfig's defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    words = ["clf", "train", str(settings.get("data", "DATA"))]
    for key, value in sorted(settings.items()):
        if key == "data" or key not in fields or not fields[key].metadata.get("help") or value == defaults.get(key):
            continue
        flag = option_flag(key)
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            words += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return shlex.join(words)


def _index(name: str) -> int:
    tail = name[len(TRIAL_PREFIX):]
    return int(tail) if tail.isdigit() else 0


@dataclass(frozen=True)
class SearchSummary:
    """One search folder for `clf runs`: its record and its trials, best first."""

    name: str
    record: dict[str, Any]
    trials: list[TrialSummary]
    path: Path


def collect_searches(root: Path) -> list[SearchSummary]:
    """Every search folder under `root` (one holding search.json), sorted by name; unreadable ones skipped."""
    searches = []
    for path in sorted(Path(root).glob(f"*/{SEARCH_FILE}")):
        try:
            record = read_search(path.parent)
            searches.append(SearchSummary(path.parent.name, record, trial_summaries(path.parent, record), path.parent))
        except (ClfError, KeyError, TypeError):
            continue
    return searches
