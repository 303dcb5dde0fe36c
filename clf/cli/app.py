"""The `clf` Typer app: the process wrapper, logging, signals, and how a user error becomes one red line.

Commands live one per module beside this one (clf/cli/train.py, ...) and register on `app` when clf.cli is imported.
Heavy libraries (torch, timm, onnx, onnxruntime) are imported inside the commands that need them, so `clf --help`
answers instantly.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.markup import escape

from clf import stop_signals
from clf.cli import render
from clf.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, ClfError, Terminated
from clf.system import launched_by_torchrun

# True once the app runs as the process itself (the `clf` script, `python -m clf`), not in-process (CliRunner).
_RUNS_AS_PROCESS = {"enabled": False}


class _ClfTyper(typer.Typer):
    """The app as the `clf` script and `python -m clf` call it: once its command has ended, the process only exits.

    A Ctrl-C or SIGTERM from then on (torch's teardown takes a while) used to land in a finaliser, e.g. a
    WeakKeyDictionary callback, and print "Exception ignored in: ... KeyboardInterrupt" after the work was done:
    the command's own end ignores them (`_ignore_late_signals`), and the exit code stays the command's.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _RUNS_AS_PROCESS["enabled"] = True
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _ignore_late_signals()


def _ignore_late_signals() -> None:
    """The command's outcome is settled: SIGINT and SIGTERM are ignored for the rest of the process (its teardown).

    Only when the app is the process (in-process callers keep their handlers) and on the main thread."""
    import signal
    import threading

    if _RUNS_AS_PROCESS["enabled"] and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


app = _ClfTyper(
    name="clf",
    help="Image classification: images -> train -> ONNX (+ parity proof) -> batched inference -> submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: typer's rich help imports a Markdown parser (0.1 s of every --help)
)
logger = logging.getLogger("clf")


def _setup_logging(verbose: bool = False) -> Callable[[], None]:
    """Library modules log through `logging`; show their warnings (bad images, fallbacks) on stderr.

    On a terminal rich draws them; in a log file or CI each record stays one plain line (rich would wrap it
    at 80 columns and break grep). Returns the function that puts the `clf` logger back as it was: the
    command line configures logging for one invocation and restores it on exit (tests invoke it many times
    in one process).
    """
    if render.err_console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=render.err_console, show_time=False, show_path=False,
                                               markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("clf")
    saved = (list(root.handlers), root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False

    def restore() -> None:
        root.handlers[:], level, root.propagate = saved[0], saved[1], saved[2]
        root.setLevel(level)

    return restore


def _raise_terminated(signum: int, frame: Any) -> None:
    stop_signals.record_stop(signum)  # in case Python swallows the exception (see clf.stop_signals)
    raise Terminated()


def _handle_sigterm() -> Callable[[], None]:
    """SIGTERM (a job scheduler's stop) unwinds like Ctrl-C: saves in progress finish, temp files go, exit 143.

    Only where the default action was in place: a SIGTERM that the parent chose to ignore stays ignored.
    Returns the function that restores the previous handler.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return lambda: None
    stop_signals.forget_stops()
    signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_swallowed_stop(previous_hook)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook

    return restore


def _quiet_swallowed_stop(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """sys.unraisablehook: a Terminated that Python could not raise (the handler ran inside an extension's import)
    is not printed as a traceback; it was recorded and the command stops at its next check. Others go to `hook`."""

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, Terminated):
            hook(info)

    return unraisable


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ClfError into one red line and its exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Each way out ignores late signals first: a second Ctrl-C while the line is printed (or under torchrun, the
        # stop signal torchrun sends this rank) must not replace the exit code or print a traceback.
        try:
            return command(*args, **kwargs)
        except ClfError as exc:
            _ignore_late_signals()
            # escape: a path like data/[2024]/ is text, not rich markup (it vanished, or "[/x]" crashed the print)
            render.err_console.print(f"[bold red]error:[/] {escape(_one_line_text(str(exc)))}", highlight=False,
                                     soft_wrap=True)
            if launched_by_torchrun():
                from clf.train.runtime import end_worker

                end_worker(exc.exit_code, meet_others=exc.every_rank)
            raise typer.Exit(exc.exit_code) from None
        except Terminated:
            _ignore_late_signals()
            render.err_console.print("[yellow]terminated (SIGTERM)[/]")
            raise typer.Exit(EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            _ignore_late_signals()
            render.err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except ImportError as exc:
            # A stop signal during a C extension's import (onnxruntime's start-up) surfaces as "initialization
            # failed" with the signal's exception as its context: it is the stop, not a broken install.
            stop = _stop_behind(exc)
            if stop is None:
                raise
            _ignore_late_signals()
            terminated = isinstance(stop, Terminated)
            render.err_console.print("[yellow]terminated (SIGTERM)[/]" if terminated else "[yellow]interrupted[/]")
            raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
        except OSError as exc:  # an output path that cannot be written, a disk that is full, ...
            _ignore_late_signals()
            where = exc.filename or "clf"
            render.err_console.print(f"[bold red]error:[/] {escape(str(where))}: {escape(exc.strerror or str(exc))}",
                                     highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        finally:
            _ignore_late_signals()

    return wrapper


def _stop_behind(exc: BaseException) -> BaseException | None:
    """The SIGTERM or Ctrl-C in an exception's chain of causes and contexts, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (Terminated, KeyboardInterrupt)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _one_line_text(text: str) -> str:
    """The error stays one line when a path holds a newline or other control character: shown escaped."""
    return "".join(repr(c)[1:-1] if c.isprintable() is False and c != "\t" else c for c in text)


def non_empty_path(text: str, name: str, what: str) -> Path:
    """A path argument; "" (an unset shell variable) is refused, not read as the current folder."""
    if not text.strip():
        raise ClfError(f"{name} is empty; give {what}")
    return Path(text)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging, onnxruntime's own log too.")] = False,
) -> None:
    """clf: from a folder of images to a competition submission and a deployable ONNX model."""
    ctx.call_on_close(_setup_logging(verbose))
    ctx.call_on_close(_handle_sigterm())
