"""CheckConfig: what `clf check` needs (the data report: duplicates, leakage, classes, unreadable files, sizes).

Each field with a help line is an option of `clf check` (clf/cli/options.py); `data` is its argument. The split
options are TrainConfig's, with the same defaults and checks: the report shows the split `clf train` would make.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clf.choices import TASK_NAMES
from clf.config.base import (JsonMixin, check_choice, column_checks, group_checks, raise_first_failure, setting,
                              task_checks)
from clf.config.training import MAX_SEED

# The near-duplicate threshold in bits of the 64-bit pHash, measured by benchmarks/near_duplicates.py (the other
# two thresholds and the measurement are in clf/data/duplicates.py, which takes this one from here).
NEAR_DUPLICATE_DISTANCE = 12
HASH_BITS = 64


@dataclass(frozen=True)
class CheckConfig(JsonMixin):
    """What ``clf check`` needs; every value is checked here, once."""

    data: str = ""  # the DATA argument
    test: str | None = setting(None, "Test images (a folder, searched recursively): also look for copies of training "
                                     "images among them.", cli_type=Path)
    json: str | None = setting(None, "Also write the full report as JSON.", cli_type=Path)
    labels_csv: str | None = setting(None, "CSV of filename,label for the images in DATA (as `clf train`).",
                                     cli_type=Path)
    id_col: str = setting("filename", "Filename column of --labels-csv.")
    label_col: str = setting("label", "Label column of --labels-csv.")
    group_col: str | None = setting(None, "Column of --labels-csv naming each image's group (as `clf train`).")
    # TASK_NAMES, checked below (not listed as choices: the long metavar would squeeze the help's columns)
    task: str = setting("single_label", "single_label, or multilabel: --labels-csv gives each image any number of "
                                        "classes (as `clf train --task`); the report counts the images of each.")
    classes: str | None = setting(None, "The classes of --labels-csv and their order (as `clf train --classes`).",
                                  show_default=False)
    val_split: float = setting(0.2, "Validation fraction of the split `clf train` would make.")
    seed: int = setting(0, "Seed of that split (`clf train --seed`).")
    dedup: bool = setting(False, "The split of `clf train --dedup`: near-duplicates kept on one side.")
    max_distance: int = setting(NEAR_DUPLICATE_DISTANCE, f"Near-duplicates: the largest Hamming distance between "
                                                         f"the {HASH_BITS}-bit perceptual hashes.")
    threads: int = setting(0, "Decode threads (0 = one per core).")

    def __post_init__(self) -> None:
        raise_first_failure((
            (self.test is None or self.test.strip() != "", "--test is empty; give the folder of test images"),
            (self.json is None or self.json.strip() != "", "--json is empty; give the report file to write"),
            (self.labels_csv is None or self.labels_csv.strip() != "", "--labels-csv is empty; give the CSV file"),
            *(column_checks(self.id_col, self.label_col) if self.labels_csv else ()),
            *group_checks(self.group_col, self.labels_csv, self.id_col, self.label_col),
            check_choice("--task", self.task, TASK_NAMES),
            *task_checks(self.task, self.labels_csv, self.classes),
            (0.0 <= self.val_split < 1.0, "--val-split must be >= 0 and < 1 (0 = no validation)"),
            (0 <= self.seed < MAX_SEED, f"--seed must be >= 0 and < {MAX_SEED} (2**31), got {self.seed}"),
            (0 <= self.max_distance <= HASH_BITS,
             f"--max-distance must be between 0 and {HASH_BITS} (bits of the hash), got {self.max_distance}"),
            (self.threads >= 0, f"--threads must be >= 0 (0 = one per core), got {self.threads}"),
        ))
