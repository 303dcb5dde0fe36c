"""Headless Chromium (Debian's package) opening a report from disk, for the report tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium is not installed (apt-get install -y chromium; .ci/run does)"


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    """Chromium run headless on `page` with `mode` (--dump-dom, --screenshot=FILE), logging to stderr; asserts it
    exited 0."""
    assert CHROMIUM is not None
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
              "--enable-logging=stderr", "--v=0", "--window-size=1200,1600"]
    run = subprocess.run([*common, *mode, page.resolve().as_uri()], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def page_problems(log: str) -> list[str]:
    """The console errors, uncaught exceptions and failed requests in Chromium's log."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]
