"""Open a report in headless Chromium (Selenium + ChromeDriver): for the tests and the benchmark.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/setup.sh`` installs them) and the
``selenium`` package (the ``dev`` extra). :func:`chromium_missing` says what is missing, if
anything, so callers can skip with a reason.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def chromium_missing() -> str | None:
    """Why a headless Chromium cannot be driven here, or ``None`` when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _browser() is None:
        return "no Chromium (apt-get install chromium chromium-driver, see scripts/setup.sh)"
    if shutil.which(DRIVER) is None:
        return "no chromedriver (apt-get install chromium-driver, see scripts/setup.sh)"
    return None


@contextlib.contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Selenium driver of headless Chromium that keeps the page's console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = chromium_missing()
    if reason:
        raise RuntimeError(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(_browser())
    for argument in (
        "--headless=new",
        "--no-sandbox",  # runs as root in containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_report(driver: Any, path: Path, *, timeout: float = 60.0) -> float:
    """Load the report at ``path`` and wait until every chart is drawn.

    Returns the page's ``emotrackReport.readyAt``: milliseconds from navigation start until the
    last chart was drawn.
    """
    driver.get(Path(path).resolve().as_uri())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = driver.execute_script(
            "return document.body && document.body.dataset.ready === 'true'"
            " ? window.emotrackReport.readyAt : null"
        )
        if ready is not None:
            return float(ready)
        time.sleep(0.05)
    raise TimeoutError(f"{path}: the report's charts were not drawn within {timeout:g} s")


def console_errors(driver: Any) -> list[str]:
    """The page's console messages of level SEVERE (errors) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
