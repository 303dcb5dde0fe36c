"""Options declared once: a command's options are built from its stage's dataclass fields.

A field declared with `clf.config.base.setting(default, help, ...)` becomes a Typer option: its name is the field's
(`batch_size` -> `--batch-size`), its type and default are the field's, its help, flags and choices ride in the
field's metadata. `config_options(TrainConfig)` adds those options to a command and hands their values to it as one
`settings` dict keyed by field name, ready for `TrainConfig(**settings)`: nothing is copied by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clf.config import field_types, option_flag


def choices_metavar(values: Iterable[str]) -> str:
    """--help shows the library's own choice list; the config checks the value, once, with one error line."""
    return "[" + "|".join(values) + "]"


def option_fields(cls: type, only: Iterable[str] | None = None, command: str | None = None) -> list[dataclasses.Field]:
    """The fields of `cls` that are options (they have a help line), in declaration order; `only` narrows them.
    A field declared for one command (setting(..., command="distill")) is an option of that `command` only."""
    fields = [f for f in dataclasses.fields(cls)
              if f.metadata.get("help") and f.metadata.get("command") in (None, command)]
    if only is None:
        return fields
    wanted = list(only)
    by_name = {f.name: f for f in fields}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise TypeError(f"{cls.__name__} has no option field {', '.join(missing)}")
    return [by_name[name] for name in wanted]


def _value_type(cls: type, f: dataclasses.Field) -> Any:
    """The type Typer parses the option's text into: text for a parsed field, else the field's own (or cli_type)."""
    meta = f.metadata
    if meta.get("parse") is not None:
        return Optional[str]
    cli_type = meta.get("cli_type")
    if cli_type is not None:
        return cli_type if f.default is not None or meta.get("required") else Optional[cli_type]
    hint = field_types(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return Optional[args[0]]
    return hint


def _default(f: dataclasses.Field) -> Any:
    """The option's default as Typer sees it: required (...), text for a parsed field ("1,8"), else the field's."""
    meta = f.metadata
    if meta.get("required"):
        return ...
    if meta.get("parse") is not None:
        return ",".join(map(str, f.default)) if f.default else None
    if meta.get("cli_type") is Path and f.default is not None:
        return Path(f.default)
    return f.default


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    """The option's names: declared ones, else the field's flag (a bool that is off by default: only --flag)."""
    if f.metadata.get("flags"):
        return tuple(f.metadata["flags"])
    if isinstance(f.default, bool) and f.default is False:
        return (option_flag(f.name),)
    return ()


def option_parameter(cls: type, f: dataclasses.Field) -> inspect.Parameter:
    """The keyword parameter Typer reads for field `f`: Annotated[type, typer.Option(...)] = default."""
    meta = f.metadata
    metavar = meta.get("metavar") or (choices_metavar(meta["choices"]) if meta.get("choices") else None)
    option = typer.Option(*_flags(f), help=meta["help"], metavar=metavar, show_default=meta.get("show_default", True))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f),
                             annotation=Annotated[_value_type(cls, f), option])


def _setting_value(f: dataclasses.Field, value: Any) -> Any:
    """The option's value as the dataclass takes it: parsed text, a path as text, the field's default when a
    parsed option was not given."""
    meta = f.metadata
    if meta.get("parse") is not None:
        return f.default if value is None else meta["parse"](value)
    if isinstance(value, Path):
        return str(value)
    return value


def config_options(cls: type, only: Iterable[str] | None = None, command: str | None = None, into: str = "settings"
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the option fields of `cls` (or `only` those; with those declared for `command`) to a command, which
    receives them as `settings` (or the parameter named `into`: two dataclasses' options stack, as `clf tune`'s
    TuneConfig over TrainConfig's).

    The command declares its own parameters (arguments, options that are not config fields) and a last parameter
    `settings: dict[str, Any]`; Typer sees the command's parameters followed by one option per field.
    """
    fields = option_fields(cls, only, command)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != into]
        generated = [option_parameter(cls, f) for f in fields]
        clash = {p.name for p in own} & {p.name for p in generated}
        if clash:
            raise TypeError(f"{command.__name__} declares {', '.join(sorted(clash))} itself and as a config field")

        @functools.wraps(command)
        def with_settings(*args: Any, **kwargs: Any) -> Any:
            settings = {f.name: _setting_value(f, kwargs.pop(f.name)) for f in fields}
            return command(*args, **{into: settings}, **kwargs)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p
                      for p in own] + generated
        with_settings.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_settings.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_settings

    return decorate


def given_options(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user typed (or set through the environment), by field name.

    By the source's name: typer carries its own copy of click, whose ParameterSource is not click's.
    """
    typed = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    return {name: value for name, value in values.items()
            if getattr(ctx.get_parameter_source(name), "name", None) in typed}
