"""`clf train --config FILE`: training settings from a YAML or TOML file, or a run's config.json replayed.

The file's keys are TrainConfig field names (`batch_size` or `batch-size`); its values sit under the command line's:
a flag given wins over the file, the file wins over TrainConfig's defaults. The run records the file it took its
settings from (TrainConfig.config_file and config_sha256).

A replayed config.json gives its recipe, not its identity: the run's name, what clf set on it (a fold member's
`fold`, a refit run's `refit_of` and `refit_epoch`, the file it was itself configured from), the sitting's `quiet`
and, for a fold member or a refit run, the group or run folder that held it are left out. A new run therefore gets
--name or the default name, and never lands on the replayed run's folder. `pretrained_sha256` is kept while the
weights file comes from the replayed config too: a changed file is then refused, not silently trained from; so is
`pseudo_sha256` while --pseudo-labels comes from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clf import __version__
from clf.config import LEGACY_VALUES, TrainConfig
from clf.errors import ClfError, one_line
from clf.reading import read_small_regular_file
from clf.run_files import RunFileError, train_settings

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 2**20  # a settings file is a few hundred bytes; a run's config.json a few kilobytes
YAML_SUFFIXES = (".yaml", ".yml")
TOML_SUFFIXES = (".toml",)
RUN_CONFIG_SUFFIXES = (".json",)
TAKES = "--config takes a .yaml, .yml or .toml file of train settings, or a run's config.json"
# Set by clf on the runs it makes, never by a user: refused in a settings file, left out of a replayed config.json.
SET_BY_CLF = ("fold", "refit_of", "refit_epoch", "config_file", "config_sha256", "resolved_class_weights",
              "precision")  # precision: the CPU decision of the run's own machine (a new run decides anew)
# A replayed run's identity and its sitting: left out (the new run is named by --name or the default).
NOT_REPLAYED = ("name", "quiet")
# Options of `clf train` that are no setting of the recipe: they belong on the command line.
COMMAND_LINE_ONLY = ("resume", "overwrite", "no_val", "config")
_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


@dataclass(frozen=True)
class ConfigFile:
    """A settings file read and checked: its absolute path, its sha256 and its settings (TrainConfig field names)."""

    path: Path
    sha256: str
    settings: dict[str, Any]


def read_config_file(path: str | Path) -> ConfigFile:
    """The train settings of a YAML/TOML file or of a run's config.json, checked key by key.

    Raises:
        ClfError: one line naming the file and what is wrong (missing, not a regular file, too large, not parsable,
            an unknown key, a value of the wrong type, a config.json that is not clf's or is from a newer clf).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*YAML_SUFFIXES, *TOML_SUFFIXES, *RUN_CONFIG_SUFFIXES):
        raise ClfError(f"{path}: {TAKES}, not {suffix or 'a file without an extension'}")
    text = _read_text(path)
    if suffix in RUN_CONFIG_SUFFIXES:
        settings = _replayed_settings(path, text)
    else:
        raw = _parse_yaml(path, text) if suffix in YAML_SUFFIXES else _parse_toml(path, text)
        settings = _user_settings(path, raw)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return ConfigFile(path=path.expanduser().resolve(), sha256=sha256, settings=settings)


def settings_under_flags(config: ConfigFile, given: dict[str, Any]) -> dict[str, Any]:
    """The options for `resolve_config`: the file's settings, the flags given over them, and where they came from.

    A flag that names the weights another way replaces the file's weights (and the sha256 recorded for them); so
    does --pseudo-labels the file's pseudo-labels.
    """
    settings = dict(config.settings)
    if "pretrained" in given or "pretrained_path" in given:
        for key in ("pretrained", "pretrained_path", "pretrained_sha256"):
            settings.pop(key, None)
    if "pseudo_labels" in given:
        settings.pop("pseudo_sha256", None)
    return {**settings, **given, "config_file": str(config.path), "config_sha256": config.sha256}


def _read_text(path: Path) -> str:
    try:
        return read_small_regular_file(path, MAX_CONFIG_BYTES, "a config file")
    except FileNotFoundError:
        raise ClfError(f"{path}: no such config file; {TAKES}") from None
    except IsADirectoryError:
        raise ClfError(f"{path}: a folder, not a file; {TAKES}") from None
    except UnicodeDecodeError:
        raise ClfError(f"{path}: not UTF-8 text; {TAKES}") from None
    except ValueError as exc:  # not a regular file (a FIFO, a device, a folder), or too large
        raise ClfError(f"{path}: {exc}; {TAKES}") from None
    except OSError as exc:
        raise ClfError(f"{path}: cannot read the config file ({exc.strerror or one_line(exc)})") from None


def _parse_yaml(path: Path, text: str) -> Any:
    import yaml  # PyYAML: only `--config FILE.yaml` needs it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or one_line(exc)
        raise ClfError(f"{path}: not valid YAML{where} ({problem})") from None


def _parse_toml(path: Path, text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its text ends with "(at line L, column C)"
        raise ClfError(f"{path}: not valid TOML: {one_line(exc)}") from None


def _user_settings(path: Path, raw: Any) -> dict[str, Any]:
    """A settings file's mapping, keys by field name, each value checked against the field's type."""
    if raw is None:
        return {}  # an empty file sets nothing
    if not isinstance(raw, dict):
        raise ClfError(f"{path}: the file must hold key: value settings at its top level, not a {type(raw).__name__}")
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = _field_name(path, key)
        if name in settings:
            raise ClfError(f"{path}: {name!r} is given twice (as {name} and {name.replace('_', '-')}); keep one")
        if name in SET_BY_CLF:
            raise ClfError(f"{path}: {key!r} is set by clf on the runs it makes, not by a config file; leave it out")
        settings[name] = _checked_value(path, name, value)
    return settings


def _field_name(path: Path, key: Any) -> str:
    """The TrainConfig field a key names; an unknown key is refused with the closest field name."""
    if not isinstance(key, str):
        raise ClfError(f"{path}: key {key!r} is not a setting name; the keys are clf train's option names")
    name = key.replace("-", "_")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    if name in fields:
        return name
    if name in COMMAND_LINE_ONLY:
        raise ClfError(f"{path}: {key!r} is a command-line option of clf train, not a setting; "
                       f"give {TrainConfig.flag(name)} on the command line")
    close = difflib.get_close_matches(name, [f for f in fields if f not in SET_BY_CLF], n=1)
    hint = f"did you mean {close[0]!r}?" if close else "the keys are clf train's option names (see clf train --help)"
    raise ClfError(f"{path}: unknown key {key!r}; {hint}")


def _checked_value(path: Path, name: str, value: Any) -> Any:
    """`value` if it has the field's type (an int where a float goes is one); a wrong type names key and type."""
    kind, optional = _field_kind(name)
    if value is None and optional:
        return None
    if kind == "float" and isinstance(value, str):
        value = _number_in_a_string(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if name == "amp" and isinstance(value, bool):
        # A recipe from before --amp auto|on|off (or YAML 1.1's unquoted on/off): true as the old default, cuda
        return "cuda" if value else "off"
    ok = isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
    if not ok:
        expected = _KIND_NAMES[kind] + (" or null" if optional else "")
        raise ClfError(f"{path}: {name!r} must be {expected}, got {_shown(value)} ({type(value).__name__})")
    return float(value) if kind == "float" else value


def _field_kind(name: str) -> tuple[str, bool]:
    """("int" | "float" | "str" | "bool", may be None) from the field's annotation ("float | None")."""
    annotation = str(TrainConfig.__dataclass_fields__[name].type)
    parts = [p.strip() for p in annotation.split("|")]
    return parts[0], "None" in parts


def _number_in_a_string(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _replayed_settings(path: Path, text: str) -> dict[str, Any]:
    """A run's config.json: its train settings as the run trained (fields it predates at their legacy values), less
    the run's identity (module docstring)."""
    import json

    try:
        config = json.loads(text)
        if not isinstance(config, dict):
            raise RunFileError("not a JSON object")
        train = train_settings(config)
    except (ValueError, RunFileError):  # JSONDecodeError is a ValueError
        raise ClfError(f"{path}: not a clf run config (no \"train\" settings); {TAKES}") from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    newer = sorted(set(train) - fields)
    if newer:
        raise ClfError(f"{path}: written by clf {config.get('clf_version', '?')} with settings this clf {__version__} "
                       f"does not know ({', '.join(newer)}); upgrade clf to replay it")
    settings = {**LEGACY_VALUES, **train}
    dropped = [*SET_BY_CLF, *NOT_REPLAYED]
    if train.get("fold") is not None or train.get("refit_of") is not None:
        dropped.append("out")  # a fold member's or refit's folder is its group's or its run's
    if train.get("folds") is None:
        dropped.append("fold_seed")  # recorded on every run, used by --folds only (and refused without it)
    settings = {k: _checked_value(path, k, v) for k, v in settings.items() if k not in dropped}
    folder = ", nor its folder" if "out" in dropped else ""
    logger.info("%s: replaying its train settings (not its name%s)", path, folder)
    return settings
