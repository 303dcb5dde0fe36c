"""What every stage's configuration shares: JSON round trips, the one-line checks, and the option declaration.

A field of a stage's dataclass that is also a command-line option is declared once, here, with ``setting(...)``:
its default and type are the field's, and its help, flags and parsing ride in the field's metadata, which the
command line (clf/cli/options.py) reads to build the option. Plain data only: no typer, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import typing
from collections.abc import Callable
from typing import Any

from clf.errors import ClfError

# Marks a TrainConfig field that `clf train --resume` may change (metadata key "resume"); every other field must
# match the checkpoint (it shapes the weights, the data split or the schedule).
RESUMABLE = {"resume": True}


def setting(default: Any, help: str = "", *, resumable: bool = False, flags: tuple[str, ...] = (),
            choices: tuple[str, ...] = (), metavar: str | None = None, required: bool = False,
            cli_type: type | None = None, parse: Callable[[str], Any] | None = None,
            show_default: bool | str = True, command: str | None = None) -> Any:
    """A dataclass field that is also a command-line option when it has `help`.

    Args:
        default: the field's default, which the option shows in --help and takes when not given.
        help: the option's help line; a field without one is not an option (set by clf itself, or an argument).
        resumable: `clf train --resume` may change it (see RESUMABLE).
        flags: the option's names when not the field's own (--batch-size): ("--output", "-o"), ("--dedup/--no-dedup",).
        choices: the allowed names, shown as [a|b|c] (the dataclass checks the value, once, with one error line).
        metavar: the value's placeholder in --help, when not the choices.
        required: the option must be given (it has no meaningful default).
        cli_type: the type the command line parses into when not the field's (pathlib.Path for paths).
        parse: turns the option's text into the field's value ("1,8" -> (1, 8)); the option takes text then.
        show_default: False hides the default in --help; a string is shown in its place.
        command: the one command whose option this is (`clf distill`'s fields of TrainConfig); None: every
            command built from the dataclass.
    """
    metadata: dict[str, Any] = {"help": help, "flags": flags, "choices": choices, "metavar": metavar,
                                "required": required, "cli_type": cli_type, "parse": parse,
                                "show_default": show_default, "command": command}
    if resumable:
        metadata.update(RESUMABLE)
    return dataclasses.field(default=default, metadata=metadata)


def option_flag(name: str) -> str:
    """The command-line flag of a config field or augmentation knob: crop_scale -> --crop-scale."""
    return "--" + name.replace("_", "-")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The evaluated type hints of a config dataclass, once per class: its annotations are strings (postponed
    evaluation), and evaluating all of them for each of ~100 fields cost `clf --help` a third of its start-up."""
    return typing.get_type_hints(cls)


def _tuple_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn them back for the fields typed as tuples."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in out and isinstance(out[f.name], list) and "tuple" in str(f.type):
            out[f.name] = tuple(out[f.name])
    return out


class JsonMixin:
    """to_dict/from_dict/to_json/from_json for flat frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**_tuple_fields(cls, {k: v for k, v in data.items() if k in known}))

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


Check = tuple[bool, str]  # (the value is fine, the one line that says what is wrong when it is not)


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> Check:
    return value in choices, f"{flag} must be one of {', '.join(choices)}, got {value!r}"


def raise_first_failure(checks: tuple[Check, ...]) -> None:
    """Raise ClfError (exit 2) with the message of the first check that failed."""
    for ok, message in checks:
        if not ok:
            raise ClfError(message)


def column_checks(id_col: str, label_col: str) -> tuple[Check, ...]:
    """--id-col and --label-col: named, and not the same column (the CSV would have one column twice)."""
    return (
        (id_col.strip() != "", f"--id-col must name a column, got {id_col!r}"),
        (label_col.strip() != "", f"--label-col must name a column, got {label_col!r}"),
        (id_col.strip() != label_col.strip(), f"--id-col and --label-col are both {id_col!r}; give two column names"),
    )


def check_columns(id_col: str, label_col: str) -> None:
    """Raise ClfError (exit 2) for the first failure of column_checks."""
    raise_first_failure(column_checks(id_col, label_col))


def group_checks(group_col: str | None, labels_csv: str | None, id_col: str, label_col: str) -> tuple[Check, ...]:
    """--group-col: a column of --labels-csv (class folders have no columns), other than the id and label ones."""
    if group_col is None:
        return ()
    return (
        (group_col.strip() != "", "--group-col is empty; give the column of --labels-csv that names each image's "
                                  "group, or leave the option out"),
        (labels_csv is not None, f"--group-col {group_col} reads the groups from the labels CSV; add --labels-csv "
                                 "FILE, or leave out --group-col"),
        (group_col.strip() not in (id_col.strip(), label_col.strip()),
         f"--group-col {group_col!r} is also the id or label column; give the column that names each image's group"),
    )


def task_checks(task: str, labels_csv: str | None, classes: str | None) -> tuple[Check, ...]:
    """--task multilabel and --classes read --labels-csv: a class folder holds one class per image and names it."""
    return (
        (task != "multilabel" or labels_csv is not None,
         "--task multilabel reads each image's classes from --labels-csv (a column of space-separated tags, or one "
         "0/1 column per class); class folders hold one class per image: add --labels-csv FILE"),
        (classes is None or classes.strip() != "",
         "--classes is empty; give a,b,c or a file with one class name per line, or leave the option out"),
        (classes is None or labels_csv is not None,
         "--classes names the classes of --labels-csv; class folders name their own: add --labels-csv FILE or leave "
         "out --classes"),
    )


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": the addresses a local Ray instance may be reached on."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
