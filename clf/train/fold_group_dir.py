"""The group folder of `clf train --folds K`: making it clf's (marker, the files clf writes at its top), clearing it
for --overwrite (clf's own files only, each fold run by its own marker), and checking that a fold trained earlier
validated on its fold of the data now.

Separate from clf.train.folds (the orchestration: plan, train, score) because this is what the group folder holds
and who owns it, the part --overwrite and --resume must get right whatever the training does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clf.config import TrainConfig
from clf.data.datasets import LabelledSet
from clf.data.folds import is_fold_group
from clf.errors import ClfError, DataError, one_line
from clf.ownership import check_clearable, clear_owned, mark_folder, record_files
from clf.run_files import GROUP_FILE, OOF_FILE, SPLIT_FILE, load_split, split_grouping, split_record
from clf.train.build import fold_assignment
from clf.train.run_folder import NESTED_RUNS, RUN_KIND, prepare_new_run_dir

logger = logging.getLogger(__name__)

GROUP_FILES = (GROUP_FILE, OOF_FILE)  # what clf writes at the top of a group folder (the members mark themselves)
GROUP_WHAT = "fold group"


def prepare_group_dir(group_dir: Path, overwrite: bool) -> None:
    """Create and mark `group_dir`; with --overwrite, first remove the old group's (or run's) files, clf's own only.

    Raises:
        ClfError: the folder is taken and --overwrite was not given, or it holds anything clf did not write.
    """
    if group_dir.exists() and not (group_dir.is_dir() and not any(group_dir.iterdir())):
        if not overwrite:
            if is_fold_group(group_dir):
                raise ClfError(f"{group_dir}: fold group already exists; use --resume {group_dir} to continue it, "
                               "--overwrite to start over, or another --name")
            prepare_new_run_dir(group_dir, overwrite=False)  # raises the refusal that fits what is there
        clear_group_dir(group_dir)
    mark_folder(group_dir, RUN_KIND)
    record_files(group_dir, GROUP_FILES)


def _nested_runs(group_dir: Path) -> list[str]:
    """The names of the clf run folders a group (or the run it replaces) may hold: fold-N, and a run's refit.
    Each is checked and cleared by its own marker (an unmarked one, or a link, counts as the user's)."""
    folds = sorted(p.name for p in group_dir.iterdir() if p.name.startswith("fold-") and p.name[5:].isdigit())
    return [*folds, *NESTED_RUNS]


def clear_group_dir(group_dir: Path) -> None:
    """--overwrite of a group (or of a run, its refit included): every fold run's files and the folder's own, after
    checking all of them are clf's.

    Raises:
        ClfError: the folder is not clf's, or it (or one of its fold runs) holds a file clf did not write.
    """
    nested = _nested_runs(group_dir)
    check_clearable(group_dir, RUN_KIND, GROUP_WHAT, nested=nested)
    clear_owned(group_dir, RUN_KIND, GROUP_WHAT, nested=nested)
    logger.info("%s: the old group's files were removed (--overwrite)", group_dir)


def check_fold_split(member: Path, fold: int, cfg: TrainConfig, labelled: LabelledSet) -> None:
    """A fold trained in an earlier sitting validated on the images of its fold; the data now must give the same.

    Raises:
        DataError: split.json is missing or unreadable, or lists other validation images (the data changed).
    """
    assert cfg.folds is not None
    expected = _fold_record(labelled, cfg, fold)["val"]
    path = member / SPLIT_FILE
    try:
        recorded = load_split(path)["val"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the fold's validation list ({one_line(exc)}); "
                        "start the group over with --overwrite") from None
    if recorded != expected:
        raise DataError(f"{path}: fold {fold} validated on other images than fold {fold} of the data now "
                        f"({len(recorded)} vs {len(expected)} images; was DATA changed?); resume with the data it "
                        "trained on, or start the group over with --overwrite")


def _fold_record(labelled: LabelledSet, cfg: TrainConfig, fold: int) -> dict[str, Any]:
    assert cfg.folds is not None
    in_val = fold_assignment(labelled, cfg) == fold
    val = [p for p, v in zip(labelled.paths, in_val) if v]
    train = [p for p, v in zip(labelled.paths, in_val) if not v]
    return split_record(cfg.data, val, train, grouping=split_grouping(cfg))
