"""Screenshots of every view of the web app at a desktop and a phone size,
for docs/web.md: ``python -m tests.integration.web_screenshots OUTDIR``
(docs/screenshots/ is where the committed ones live). Not part of the test
run: a picture is for a person to look at, not for a test to compare.

The servers and their content are the browser tests' (webpages.py): two
in-process servers on loopback, a seeded mailbox, Debian's Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from .webpages import (
    SIZES,
    admin_tour,
    base_url,
    chromium_path,
    launch_args,
    log_in,
    seed,
    servers,
    tour,
)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.integration.web_screenshots OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    executable = chromium_path()
    if executable is None:
        print("no Chromium here: apt-get install chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as (a, b), \
            sync_playwright() as playwright:
        seed(a, b)
        url = base_url(b)
        browser = playwright.chromium.launch(executable_path=executable, args=launch_args())
        for size, viewport in SIZES.items():
            context = browser.new_context(viewport=viewport)
            page = context.new_page()
            page.goto(url + "/")
            page.locator("#login-form").get_by_label("Address").wait_for()
            page.screenshot(path=str(out / f"login-{size}.png"), full_page=True)
            print(out / f"login-{size}.png")
            log_in(page, url)

            def shoot(name: str, size: str = size, page: Any = page) -> None:
                page.mouse.move(0, 0)  # no hover look on whatever was clicked last
                page.screenshot(path=str(out / f"{name}-{size}.png"), full_page=True)
                print(out / f"{name}-{size}.png")

            tour(page, url, shoot)
            page.get_by_role("button", name="Log out").click()
            admin_tour(page, url, shoot)
            context.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
