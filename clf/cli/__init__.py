"""The `clf` command line: parse, build a config, call the library, print with rich. No logic here.

app.py holds the Typer app and the error handling; options.py builds each command's options from its stage's
dataclass fields (declared once, in clf/config/); render.py the consoles and progress displays; one module per
command registers it on the app (importing them here, in the order `clf --help` lists them).
"""

from clf.cli.app import app

# Each import registers its commands; this order is the flow a user follows, and the order of `clf --help`.
from clf.cli import catalogue  # noqa: F401,E402 -- sample-data, models
from clf.cli import check  # noqa: F401,E402
from clf.cli import train  # noqa: F401,E402
from clf.cli import distill  # noqa: F401,E402
from clf.cli import augment_preview  # noqa: F401,E402
from clf.cli import lr_find  # noqa: F401,E402
from clf.cli import runs  # noqa: F401,E402
from clf.cli import export  # noqa: F401,E402
from clf.cli import infer  # noqa: F401,E402
from clf.cli import evaluate  # noqa: F401,E402
from clf.cli import report  # noqa: F401,E402
from clf.cli import score  # noqa: F401,E402
from clf.cli import serve  # noqa: F401,E402
from clf.cli import tune  # noqa: F401,E402
from clf.cli.render import console, err_console  # noqa: E402

__all__ = ["app", "console", "err_console"]
