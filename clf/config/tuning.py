"""`clf tune`'s own settings: the search around the ordinary `clf train` options (which are the fixed part).

Plain data: the search space text, the trial count and budget, the scheduler's knobs and where Ray runs. The space
itself is parsed and checked in clf/tune/space.py (it needs TrainConfig's fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clf.config.base import JsonMixin, is_loopback_host, setting
from clf.errors import SettingError

# ASHA on a few epochs: a trial is first judged after one epoch, and half of those reaching a rung go on
# (reduction factor 2). With 3 epochs the rungs are epochs 1 and 2: a hopeless trial stops after one epoch.
DEFAULT_GRACE_EPOCHS = 1
DEFAULT_REDUCTION_FACTOR = 2
_DURATION = re.compile(r"^\s*(?P<number>\d+(\.\d+)?)\s*(?P<unit>s|m|h|)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'90' or '90s', '20m', '1.5h' -> seconds.

    Raises:
        SettingError: not a positive duration.
    """
    match = _DURATION.match(text or "")
    if match is None or float(match["number"]) <= 0:
        raise SettingError(f"--time-budget {text!r}: give a duration such as 20m, 90s or 1.5h")
    return float(match["number"]) * _SECONDS[match["unit"]]


@dataclass(frozen=True)
class TuneConfig(JsonMixin):
    trials: int = setting(8, "Trials (runs) to try; with grid axes in --space, a multiple of the grid's size.")
    time_budget: str | None = setting(None, "Stop starting and running trials after this long (e.g. 20m, 90s, "
                                            "1.5h); finished trials count.", metavar="DURATION")
    space: str | None = setting(None, "The search space: a .toml/.yaml file, or 'KEY=KIND:ARGS ...' with KIND "
                                      "loguniform:LO:HI, uniform:LO:HI, int:LO:HI, choice:A,B,C or grid:A,B,C. "
                                      "[default: lr, augment, label smoothing, batch size and image size]",
                                show_default=False, metavar="SPACE")
    grace_epochs: int = setting(DEFAULT_GRACE_EPOCHS, "ASHA: epochs every trial gets before it can be stopped.")
    reduction_factor: int = setting(DEFAULT_REDUCTION_FACTOR, "ASHA: 1 in this many trials goes on at each rung.")
    # Measured on 2 cores (benchmarks/tune_overhead.py, README): side by side 36.6 s, one after the other 95.5 s.
    parallel: bool = setting(True, "Run trials side by side, one core each (up to the usable cores), rather than one "
                                   "after the other on every core (2.6x slower on 2 cores: see README).",
                             flags=("--parallel/--sequential",))
    search_seed: int = setting(0, "Seed of the search's own draws (which parameters each trial gets).")
    host: str = setting("127.0.0.1", "Address the local Ray instance binds: loopback only (use --address to "
                                     "reach other machines).")
    address: str | None = setting(None, "An existing Ray cluster (ray://HOST:10001, or auto on one of its nodes): "
                                        "one trial per worker, DATA on a path every node sees. Default: a local Ray "
                                        "bound to loopback.", metavar="RAY")

    def __post_init__(self) -> None:
        checks = (
            (self.trials >= 1, f"--trials must be >= 1, got {self.trials}"),
            (self.grace_epochs >= 1, f"--grace-epochs must be >= 1, got {self.grace_epochs}"),
            (self.reduction_factor >= 2, f"--reduction-factor must be >= 2, got {self.reduction_factor}"),
            (self.address is None or self.address.strip() != "", "--address is empty; give the Ray cluster's "
                                                                 "address, or leave it out for a local Ray"),
            (self.address is not None or is_loopback_host(self.host),
             f"--host {self.host}: a local clf tune binds Ray to loopback only (127.0.0.1); to use other machines, "
             "start a Ray cluster there and give its --address"),
        )
        for ok, message in checks:
            if not ok:
                raise SettingError(message)
        if self.time_budget is not None:
            parse_duration(self.time_budget)

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget is None else parse_duration(self.time_budget)
