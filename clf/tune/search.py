"""`clf tune`: the search itself. Checks everything before Ray starts, starts a local Ray bound to loopback (or joins
--address), runs Ray Tune with an ASHA scheduler over trials that are ordinary clf runs (clf.tune.trial), and
writes search.json, best.yaml and the command line of the best trial (clf.tune.record).

Stopping: SIGINT or SIGTERM asks Tune to stop (its own graceful stop: experiment state saved, every trial's actor
stopped), then Ray is shut down and the signal's exit code follows (130 / 143); a second signal stops at once.
Each trial's run folder is whole at every epoch (clf's atomic checkpoints), so `clf tune --resume runs/NAME`
restores Tune's experiment and the unfinished trials continue from their last.pt.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from clf import ray_local
from clf.config import TrainConfig, TuneConfig
from clf.errors import ClfError, Terminated, one_line
from clf.ownership import mark_folder
from clf.stop_signals import stop_signals_handled
from clf.system import usable_cpus
from clf.train.resume import absolute_paths
from clf.train.run_folder import check_run_name
from clf.tune import record as rec
from clf.tune.space import Dimension, check_trials_fit_grid, default_space, parse_space
from clf.tune.trial import EPOCH, OBJECTIVE, run_trial

logger = logging.getLogger(__name__)

TUNE_EXTRA_HINT = "clf tune needs the tune extra: pip install 'clf[tune]'"
SEARCH_KIND = "search"  # the ownership marker's kind of a search folder
# clf prints its own lines and table: no Tune banner or progress table; the JSON and CSV loggers are given
# explicitly (Tune reads its results back from them), not the automatic TensorBoard one (an optional package)
QUIET_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
# Trial settings clf sets per trial: not part of the fixed recipe.
PER_TRIAL = ("name", "out", "quiet", "resume")


@dataclass(frozen=True)
class SearchResult:
    search_dir: Path
    trials: list[rec.TrialSummary]
    best: rec.TrialSummary | None
    best_config: Path | None
    command: str | None
    state: str


def check_tune_extra() -> None:
    """Raises ClfError (one line, exit 2) when Ray Tune is not installed (looked up without importing ray)."""
    if any(importlib.util.find_spec(name) is None for name in ("ray", "pandas", "pyarrow")):
        raise ClfError(TUNE_EXTRA_HINT)


def tune_search(tune_cfg: TuneConfig, given: dict[str, Any], resume: str | None = None,
                on_start: Callable[[Path, list[Dimension]], Any] | None = None) -> SearchResult:
    """Run (or continue, with `resume` = the search folder) a search; returns its trials, best first.

    Args:
        given: the `clf train` options given (field names): the fixed part of every trial.

    Raises:
        ClfError: the extra, the space, the settings, the folder (before Ray starts); Ray failing to start.
        Terminated / KeyboardInterrupt: a stop signal, after Tune and Ray were stopped (resume continues).
    """
    check_tune_extra()
    if resume is not None:
        search_dir = Path(resume)
        record = rec.read_search(search_dir)
        tune_cfg = TuneConfig.from_dict({**record["tune"], **{k: v for k, v in tune_cfg.to_dict().items()
                                                              if k in ("address", "host")}})
    else:
        search_dir, record = _new_search(tune_cfg, given)
    space = rec.space_of(record)
    if on_start is not None:
        on_start(search_dir, space)
    record = {**record, "state": rec.RUNNING}
    rec.write_search(search_dir, record)
    interrupted = _run(tune_cfg, record, search_dir, space, restore=resume is not None)
    return _finish(search_dir, record, interrupted)


def _new_search(tune_cfg: TuneConfig, given: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Check the settings and the space, create runs/NAME and its search.json (state: running)."""
    fixed = absolute_paths({k: v for k, v in given.items() if k not in PER_TRIAL})
    # --amp auto's start-up probe, on a machine busy with other trials, decided fp32 for one trial and bf16 for the
    # next: trials must differ only by their parameters, and best.yaml must retrain to its trial. fp32 unless given.
    fixed.setdefault("amp", "off")
    if not fixed.get("data"):
        raise ClfError("clf tune needs DATA (a folder of class folders, or images with --labels-csv)")
    arch = fixed.get("arch", TrainConfig().arch)
    space = parse_space(tune_cfg.space) if tune_cfg.space is not None else default_space(arch, fixed)
    if not space:
        raise ClfError("nothing to search: every setting of the default space is fixed by a flag; give --space")
    check_trials_fit_grid(space, tune_cfg.trials)
    fixed_keys = sorted(set(fixed) & {d.key for d in space})
    if fixed_keys:
        raise ClfError(f"{', '.join(fixed_keys)}: both fixed by a flag and searched in --space; give it one way")
    _check_recipe(fixed, space)
    out = Path(given.get("out") or TrainConfig().out)
    name = given.get("name") or _default_name(out, arch)
    check_run_name(name)
    search_dir = out / name
    if search_dir.exists():
        raise ClfError(f"{search_dir}: already exists; continue it with `clf tune --resume {search_dir}` or give "
                       "another --name")
    search_dir.mkdir(parents=True)
    mark_folder(search_dir, SEARCH_KIND)
    record = {"format": rec.SEARCH_FORMAT, "arch": arch, "fixed": fixed, "space": [d.to_dict() for d in space],
              "tune": tune_cfg.to_dict(), "objective": fixed.get("metric") or "accuracy", "state": rec.RUNNING}
    return search_dir, record


def _check_recipe(fixed: dict[str, Any], space: list[Dimension]) -> None:
    """The fixed settings with each dimension's first value make a valid TrainConfig: a bad flag is one line now,
    not an error in every trial."""
    try:
        TrainConfig(**{**fixed, **{d.key: d.values[0] for d in space}})
    except TypeError as exc:
        raise ClfError(f"clf tune: {one_line(exc)}") from None


def _default_name(out: Path, arch: str) -> str:
    base = f"tune-{arch}"
    name, number = base, 1
    while (out / name).exists():
        number += 1
        name = f"{base}-{number}"
    return name


def _run(tune_cfg: TuneConfig, record: dict[str, Any], search_dir: Path, space: list[Dimension],
         restore: bool) -> int | None:
    """Ray up, Tune run (or restored) to the end or to a stop signal, Ray down. Returns the stop signal, if any."""
    local = tune_cfg.address is None
    os.environ.update(QUIET_TUNE_ENV)
    ray = ray_local.use_loopback() if local else __import__("ray")
    try:
        ray_local.start_ray(ray, tune_cfg.address, usable_cpus())
        tuner = _tuner(tune_cfg, record, search_dir, space, restore)
        with _stop_signals_stop_tune() as received:
            tuner.fit()
        return received[0] if received else None
    finally:
        ray_local.shutdown_ray(ray)


def _tuner(tune_cfg: TuneConfig, record: dict[str, Any], search_dir: Path, space: list[Dimension],
           restore: bool) -> Any:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from clf.tune.scheduler import RunFolderASHA

    cpus, threads = _trial_resources(tune_cfg)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, fixed=record["fixed"], search_dir=str(search_dir.resolve()), threads=threads),
        {"cpu": cpus})
    storage = str(search_dir.resolve())
    if restore:
        return tune.Tuner.restore(str(Path(storage) / rec.TUNE_DIR), trainable, resume_unfinished=True,
                                  resume_errored=True)
    epochs = int(record["fixed"].get("epochs") or TrainConfig().epochs)
    scheduler = RunFolderASHA(str(search_dir.resolve()), record["objective"], time_attr=EPOCH, max_t=max(epochs, 1),
                              grace_period=min(tune_cfg.grace_epochs, epochs),
                              reduction_factor=tune_cfg.reduction_factor)
    tune_config = tune.TuneConfig(
        metric=OBJECTIVE, mode="max", scheduler=scheduler, num_samples=check_trials_fit_grid(space, tune_cfg.trials),
        search_alg=BasicVariantGenerator(random_state=tune_cfg.search_seed),
        time_budget_s=tune_cfg.time_budget_s, max_concurrent_trials=None,
        trial_dirname_creator=lambda trial: trial.trial_id,
    )
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    run_config = tune.RunConfig(name=rec.TUNE_DIR, storage_path=storage, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=0),
                                callbacks=[JsonLoggerCallback(), CSVLoggerCallback()])
    return tune.Tuner(trainable, param_space=_param_space(space), tune_config=tune_config, run_config=run_config)


def _trial_resources(tune_cfg: TuneConfig) -> tuple[float, int]:
    """(Ray CPUs per trial, torch threads per trial): one core each side by side, or every core one at a time."""
    if tune_cfg.address is not None:
        return 1.0, 1  # a cluster: one trial per worker CPU
    cores = usable_cpus()
    return (1.0, 1) if tune_cfg.parallel else (float(cores), cores)


def _param_space(space: list[Dimension]) -> dict[str, Any]:
    from ray import tune

    def sampler(dim: Dimension) -> Any:
        low, high = dim.values[0], dim.values[-1]
        if dim.kind == "loguniform":
            return tune.loguniform(low, high)
        if dim.kind == "uniform":
            return tune.uniform(low, high)
        if dim.kind == "int":
            return tune.randint(low, high + 1)
        if dim.kind == "grid":
            return tune.grid_search(list(dim.values))
        return tune.choice(list(dim.values))

    return {dim.key: sampler(dim) for dim in space}


@contextmanager
def _stop_signals_stop_tune() -> Iterator[list[int]]:
    """The first SIGINT/SIGTERM asks Tune for its graceful stop (its SIGUSR1 handler: state saved, trials stopped);
    a second one stops at once (KeyboardInterrupt / Terminated out of Tune's loop, then Ray is shut down)."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # clf's handler below takes SIGINT and SIGTERM alike
    received: list[int] = []
    saved: dict[int, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        logger.warning("stopping the search: trials stop, Tune saves its state (again to stop at once)")
        signal.raise_signal(signal.SIGUSR1)

    with stop_signals_handled(stop, saved):
        yield received


def _finish(search_dir: Path, record: dict[str, Any], interrupted: int | None) -> SearchResult:
    """Trials summed up, best.yaml and the command line written, search.json updated; then the stop signal's
    exception, if one stopped the search."""
    trials = rec.trial_summaries(search_dir, record)
    best = next((t for t in trials if t.objective is not None and not math.isnan(t.objective)), None)
    best_config = command = None
    if best is not None:
        best_config, command = rec.write_best_config(search_dir, best)
        logger.info("best trial %s (%s %.4f): clf train --config %s, or: %s", best.name, record["objective"],
                    best.objective, best_config, command)
    state = rec.INTERRUPTED if interrupted is not None else rec.DONE
    rec.write_search(search_dir, {
        **record, "state": state, "best": None if best is None else best.name, "command": command,
        "trials": [{"name": t.name, "params": t.params, "objective": t.objective, "epochs": t.epochs,
                    "stopped_early": t.stopped_early} for t in trials]})
    if interrupted is not None:
        raise Terminated() if interrupted == signal.SIGTERM else KeyboardInterrupt()
    return SearchResult(search_dir, trials, best, best_config, command, state)
