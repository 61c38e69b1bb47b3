"""A real Chromium for the console's end-to-end tests: Debian's ``chromium`` driven by Playwright for Python,
pointed at that executable (Playwright's own browser is never downloaded), headless, in a fresh profile, with
every feature that would reach the network turned off. Screenshots go to a folder a reviewer can open."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Root needs --no-sandbox; the rest keeps a headless Chromium off the network and quiet in CI.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS_ENV = "HYBRIDFLOW_TEST_SCREENSHOTS"


def chromium() -> str | None:
    """The Chromium executable on PATH (``apt-get install chromium``), or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


async def open_browser(playwright: Any, executable: str, profile: Path, *, phone: bool = False,
                       locale: str = "en-US") -> Any:
    """A browser (a persistent context in a fresh ``--user-data-dir``) at desktop or phone size."""
    profile.mkdir(parents=True, exist_ok=True)
    return await playwright.chromium.launch_persistent_context(
        str(profile), executable_path=executable, headless=True, args=FLAGS, locale=locale,
        viewport=PHONE if phone else DESKTOP, device_scale_factor=2 if phone else 1, is_mobile=phone,
        has_touch=phone, timezone_id="America/Sao_Paulo")


class Screenshots:
    """Writes screenshots to the test's folder and, when $HYBRIDFLOW_TEST_SCREENSHOTS names one, there too."""

    def __init__(self, folder: Path) -> None:
        self.folders = [folder] + ([Path(os.environ[SCREENSHOTS_ENV])] if os.environ.get(SCREENSHOTS_ENV) else [])
        for path in self.folders:
            path.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    async def take(self, page: Any, name: str) -> None:
        await page.wait_for_load_state("networkidle")
        data = await page.screenshot(full_page=True)
        for folder in self.folders:
            (folder / f"{name}.png").write_bytes(data)
            self.taken.append(folder / f"{name}.png")
