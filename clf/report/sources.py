"""What each PATH of `clf report` is: a run folder, a fold group, an exported .onnx, or a folder holding runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clf.data.folds import is_fold_group
from clf.errors import ClfError
from clf.run_files import CONFIG_FILE, GROUP_FILE

WHAT = "a run folder, a fold group, a folder of runs or an exported .onnx"


@dataclass
class Sources:
    """The PATHs sorted by kind, each in the order given (a folder of runs adds its runs and groups by name)."""

    runs: list[Path] = field(default_factory=list)
    groups: list[Path] = field(default_factory=list)
    models: list[Path] = field(default_factory=list)  # .onnx files

    def model_paths(self) -> list[Path]:
        """The single models a report could evaluate: the runs and the .onnx files."""
        return [*self.runs, *self.models]


def classify(paths: tuple[str, ...] | list[str]) -> Sources:
    """Sort the PATHs by kind.

    Raises:
        ClfError: a PATH that does not exist or is none of those kinds (one line naming it).
    """
    sources = Sources()
    for text in paths:
        _add(sources, Path(text))
    return sources


def _add(sources: Sources, path: Path) -> None:
    if not path.exists():
        raise ClfError(f"{path}: no such file or folder; give {WHAT}")
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ClfError(f"{path}: not {WHAT}")
        sources.models.append(path)
    elif is_fold_group(path):
        sources.groups.append(path)
    elif (path / CONFIG_FILE).is_file():
        sources.runs.append(path)
    else:
        runs = sorted(config.parent for config in path.glob(f"*/{CONFIG_FILE}") if not config.parent.is_symlink())
        groups = sorted(record.parent for record in path.glob(f"*/{GROUP_FILE}") if not record.parent.is_symlink())
        if not runs and not groups:
            raise ClfError(f"{path}: not {WHAT} (no {CONFIG_FILE} or {GROUP_FILE} in it or its sub-folders)")
        sources.runs += [run for run in runs if run not in groups]
        sources.groups += groups
