"""The HTML file: the Jinja2 template (autoescaped: class, file and run names are data), and its write.

clf replaces only a report it wrote: the file's head carries GENERATOR, and an existing file without it is
refused rather than overwritten (an -o that names someone's page by mistake costs them nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clf.atomic import atomic_write_text
from clf.ownership import check_replaceable_file, head_holds

TEMPLATE = "report.html.j2"
GENERATOR = '<meta name="generator" content="clf report">'
_HEAD_BYTES = 4096  # the generator tag sits in the first lines of the head


def render(context: dict[str, Any]) -> str:
    """The report's HTML from the template, every value escaped unless the template says otherwise."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE).render(generator=GENERATOR, **context)


def check_report_output(path: str | Path) -> Path:
    """Fail before any work when `path` cannot take the report: not a writable file path, or an existing file clf
    did not write.

    Raises:
        ClfError / StorageError: one line naming the file.
    """
    return check_replaceable_file(path, is_clf_report, "exists and is not a report clf wrote; clf replaces only its "
                                  "own reports: choose another -o or remove the file")


def is_clf_report(path: Path) -> bool:
    return head_holds(path, GENERATOR.encode(), size=_HEAD_BYTES)


def write_report(path: str | Path, html: str) -> Path:
    """Write the HTML atomically (a reader never sees half a report)."""
    atomic_write_text(path, html)
    return Path(path)
