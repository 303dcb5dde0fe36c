"""The search space of `clf tune`: parsed from `--space 'KEY=KIND:ARGS ...'` or a TOML/YAML file, checked against
TrainConfig's options, and turned into Ray Tune's sampling objects only where Ray runs.

    lr=loguniform:1e-4:1e-2    uniform:LO:HI    int:LO:HI (both ends included)
    augment=choice:none,light,default           grid:A,B,C (every value, in order: Tune's grid_search)

A file maps each key to the same text (`lr = "loguniform:1e-4:1e-2"`) or to a list (a choice). Keys are the
TrainConfig option names (`label_smoothing` or `label-smoothing`). Plain data here: no ray import.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf.config import AUGMENT_PRESETS, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZES, TrainConfig, field_types
from clf.errors import ClfError, one_line
from clf.reading import read_small_regular_file

KINDS = ("loguniform", "uniform", "int", "choice", "grid")
RANGE_KINDS = ("loguniform", "uniform", "int")
SPACE_SYNTAX = "KEY=KIND:ARGS with KIND loguniform:LO:HI, uniform:LO:HI, int:LO:HI, choice:A,B,C or grid:A,B,C"
# Settings that name the data, the run or the machine, or that clf sets itself: fixed, never searched.
NOT_SEARCHABLE = ("data", "name", "out", "quiet", "device", "workers", "folds", "fold_seed", "refit", "labels_csv",
                  "id_col", "label_col", "classes", "group_col", "pseudo_labels", "pseudo_images", "pretrained_path",
                  "strict", "task", "metric", "epochs", "val_split", "config_file", "config_sha256")
MAX_SPACE_BYTES = 2**16


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its TrainConfig field, how it is drawn, and the values or range (typed)."""

    key: str
    kind: str
    values: tuple[Any, ...]  # a range's (low, high), or the choice's / grid's values

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Dimension":
        return cls(data["key"], data["kind"], tuple(data["values"]))

    def describe(self) -> str:
        joiner = ":" if self.kind in RANGE_KINDS else ","
        return f"{self.key}={self.kind}:{joiner.join(_text(v) for v in self.values)}"


def parse_space(text: str) -> list[Dimension]:
    """`--space`: a file path (.toml/.yaml/.yml) or 'KEY=KIND:ARGS ...' (spaces or newlines between entries).

    Raises:
        ClfError: one line naming the entry (or the file) and what is wrong.
    """
    stripped = text.strip()
    if Path(stripped).suffix.lower() in (".toml", ".yaml", ".yml") and "=" not in stripped:
        return space_from_file(Path(stripped))
    entries = stripped.split()
    if not entries:
        raise ClfError(f"--space is empty; give {SPACE_SYNTAX}, or a .toml/.yaml file")
    dimensions = []
    for entry in entries:
        key, sep, spec = entry.partition("=")
        if not sep or not key:
            raise ClfError(f"--space {entry!r}: not KEY=KIND:ARGS; give {SPACE_SYNTAX}")
        dimensions.append(parse_dimension(key, spec, f"--space {entry!r}"))
    return _no_repeats(dimensions, "--space")


def space_from_file(path: Path) -> list[Dimension]:
    """A TOML/YAML file: {key: "KIND:ARGS" or [choice, ...]}."""
    try:
        text = read_small_regular_file(path, MAX_SPACE_BYTES, "a search space file")
    except FileNotFoundError:
        raise ClfError(f"{path}: no such search space file") from None
    except (OSError, ValueError) as exc:
        raise ClfError(f"{path}: cannot read the search space file ({one_line(exc)})") from None
    raw = _parse_file(path, text)
    if not isinstance(raw, dict) or not raw:
        raise ClfError(f"{path}: a search space file maps each setting to KIND:ARGS or a list, e.g. "
                       "lr = \"loguniform:1e-4:1e-2\"")
    dimensions = []
    for key, spec in raw.items():
        where = f"{path}: {key}"
        if isinstance(spec, list):
            spec = "choice:" + ",".join(_text(v) for v in spec)
        elif not isinstance(spec, str):
            raise ClfError(f"{where}: give KIND:ARGS text or a list of values, not {type(spec).__name__}")
        dimensions.append(parse_dimension(str(key), spec, where))
    return _no_repeats(dimensions, str(path))


def parse_dimension(key: str, spec: str, where: str) -> Dimension:
    """One KEY and its KIND:ARGS, typed by the TrainConfig field."""
    field = _searchable_field(key.strip().replace("-", "_"), where)
    kind, sep, args = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ClfError(f"{where}: unknown kind {kind!r}; give {SPACE_SYNTAX}")
    if kind in RANGE_KINDS:
        return _range(field, kind, args, where)
    values = [v.strip() for v in args.split(",")]
    if not args.strip() or any(v == "" for v in values):
        raise ClfError(f"{where}: an empty {kind} value; give {kind}:A,B,C")
    typed = tuple(_typed(field, v, where) for v in values)
    if len(set(typed)) != len(typed):
        raise ClfError(f"{where}: a {kind} value is repeated; give each value once")
    for value in typed:
        _check_value(field.name, value, where)
    return Dimension(field.name, kind, typed)


def default_space(arch: str, fixed: dict[str, Any]) -> list[Dimension]:
    """What the recipe benchmark found to matter: the LR most, then augmentation, label smoothing, batch size and
    image size. A setting given as a flag is fixed and drops out."""
    size = DEFAULT_IMG_SIZES.get(arch, DEFAULT_IMG_SIZE)
    sizes = tuple(sorted({max(16, (size * 3 // 4) // 16 * 16), size}))
    space = [
        Dimension("lr", "loguniform", (3e-4, 1e-2)),
        Dimension("augment", "choice", tuple(p for p in AUGMENT_PRESETS if p != "strong")),
        Dimension("label_smoothing", "choice", (0.0, 0.1)),
        Dimension("batch_size", "choice", (16, 32, 64)),
        Dimension("img_size", "choice", sizes),
    ]
    return [d for d in space if d.key not in fixed]


def grid_size(space: list[Dimension]) -> int:
    size = 1
    for dim in space:
        if dim.kind == "grid":
            size *= len(dim.values)
    return size


def check_trials_fit_grid(space: list[Dimension], trials: int) -> int:
    """Tune runs every grid point `samples` times: --trials must be a multiple of the grid's size. Returns samples."""
    size = grid_size(space)
    if trials % size:
        raise ClfError(f"--trials {trials}: the grid axes of --space make {size} combinations; give a multiple of "
                       f"{size} (e.g. --trials {size})")
    return trials // size


def _searchable_field(name: str, where: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.metadata.get("help")
              and f.metadata.get("command") is None}
    if name in NOT_SEARCHABLE and name in fields:
        raise ClfError(f"{where}: {name} is not searched (it names the data, the run or the schedule clf tunes "
                       "over); give it as a flag, e.g. --" + name.replace("_", "-"))
    if name not in fields or name in NOT_SEARCHABLE:
        near = difflib.get_close_matches(name, [n for n in fields if n not in NOT_SEARCHABLE], n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ClfError(f"{where}: unknown setting {name!r}{hint}; the keys are `clf train` option names")
    return fields[name]


def _base_type(field: dataclasses.Field) -> type:
    hint = field_types(TrainConfig)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _typed(field: dataclasses.Field, text: str, where: str) -> Any:
    kind = _base_type(field)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ClfError(f"{where}: {text!r} is not {'true or false' if kind is bool else 'a number'} "
                       f"(the values of {field.name})") from None
    return text


def _range(field: dataclasses.Field, kind: str, args: str, where: str) -> Dimension:
    parts = args.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ClfError(f"{where}: give {kind}:LO:HI")
    wanted = int if kind == "int" else float
    base = _base_type(field)
    if base not in (int, float) or (wanted is float and base is int):
        raise ClfError(f"{where}: {field.name} takes {base.__name__} values; use choice:A,B,C"
                       + ("" if base is not int else " or int:LO:HI"))
    try:
        low, high = (wanted(p) for p in parts)
    except ValueError:
        raise ClfError(f"{where}: {args!r} is not two {'integers' if wanted is int else 'numbers'}") from None
    if not low < high:
        raise ClfError(f"{where}: LO must be below HI, got {low:g} and {high:g}")
    if kind == "loguniform" and low <= 0:
        raise ClfError(f"{where}: loguniform needs LO > 0, got {low:g}")
    for value in (low, high):
        _check_value(field.name, value, where)
    return Dimension(field.name, kind, (low, high))


def _check_value(name: str, value: Any, where: str) -> None:
    """The value as TrainConfig's own checks see it (e.g. an unknown augment preset): one line, naming the entry."""
    try:
        TrainConfig(**{name: value})
    except ClfError as exc:
        raise ClfError(f"{where}: {one_line(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise ClfError(f"{where}: {value!r} does not fit {name} ({one_line(exc)})") from None


def _no_repeats(dimensions: list[Dimension], where: str) -> list[Dimension]:
    keys = [d.key for d in dimensions]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ClfError(f"{where}: {', '.join(repeated)} given more than once")
    return dimensions


def _parse_file(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ClfError(f"{path}: not valid TOML ({one_line(exc)})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClfError(f"{path}: not valid YAML ({one_line(exc)})") from None


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)
