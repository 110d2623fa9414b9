"""Takes docs/page-desktop.png, docs/page-phone.png and docs/page-search.png.
Run through scripts/screenshots."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LINK = re.compile(r"chatstore: open (http://\S+/#token=(\S+)) to sign in")

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
}
CONVERSATIONS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "Packing for a weekend in Lisbon",
        [
            {"role": "user", "content": "What's the weather going to be in Lisbon this weekend?"},
            {"role": "assistant", "tool_calls": [CALL]},
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "name": "get_weather",
                "content": '{"saturday": "sunny, 24°C", "sunday": "light rain, 19°C"}',
            },
            {
                "role": "assistant",
                "content": "Sunny and 24°C on Saturday, light rain and 19°C on Sunday.\n"
                "Pack a light jacket and an umbrella for Sunday.",
            },
            {"role": "user", "content": "Any tips for walking shoes? The hills are steep."},
            {
                "role": "assistant",
                "content": "Wear shoes with a good grip: the calçada (the polished stone "
                "pavement) gets slippery, above all when it rains.",
            },
        ],
    ),
    (
        "Sourdough starter schedule",
        [
            {"role": "user", "content": "How often should I feed my sourdough starter?"},
            {
                "role": "assistant",
                "content": "At room temperature, once or twice a day; in the fridge, once a week.",
            },
        ],
    ),
    (
        "Postgres keyset pagination",
        [
            {"role": "user", "content": "Why is OFFSET slow on deep pages?"},
            {
                "role": "assistant",
                "content": "OFFSET reads and throws away every row before the page. A keyset "
                "seek, WHERE (updated_at, id) < ($1, $2), starts right at the page.",
            },
        ],
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(scratch: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CHATSTORE_DATABASE_URL", "DATABASE_URL") and not name.startswith("PG")
    }
    env["CHATSTORE_DATA_DIR"] = str(scratch)
    port = free_port()
    log = scratch / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "chatstore", "serve", "--port", str(port)],
            env=env,
            cwd=scratch,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"chatstore serve exited:\n{log.read_text()}")
        found = LINK.search(log.read_text())
        if found:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return server, found.group(1), f"http://127.0.0.1:{port}"
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    server.kill()
    sys.exit(f"chatstore serve did not get ready:\n{log.read_text()}")


def seed(base_url: str, token: str) -> str:
    """The conversations, oldest first (the first is the newest activity)."""
    first = ""
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        for title, messages in reversed(CONVERSATIONS):
            created = client.post("/api/conversations", json={"title": title})
            created.raise_for_status()
            first = created.json()["id"]
            client.post(
                f"/api/conversations/{first}/messages", json={"messages": messages}
            ).raise_for_status()
    return first


def shoot(page: Page, name: str) -> None:
    page.wait_for_timeout(300)  # the fonts and the last layout settle
    page.screenshot(path=str(DOCS / name))
    print(f"wrote docs/{name}")


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="chatstore-shots-", dir="/tmp"))
    scratch.chmod(0o755)  # the embedded cluster's postgres user enters it
    server, link, base_url = start_server(scratch)
    try:
        from urllib.parse import unquote

        token = unquote(link.partition("#token=")[2])
        first = seed(base_url, token)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            desktop = browser.new_context(viewport={"width": 1280, "height": 760})
            page = desktop.new_page()
            page.goto(link)
            page.goto(f"{base_url}/#c={first}")
            page.locator("#messages li.message").nth(5).wait_for()
            page.locator("#messages details.fold").nth(1).locator("summary").click()
            shoot(page, "page-desktop.png")
            page.locator("#search").fill("rain")
            page.locator("#hits a").first.wait_for()
            shoot(page, "page-search.png")
            phone = browser.new_context(
                viewport={"width": 390, "height": 760}, device_scale_factor=2
            )
            small = phone.new_page()
            small.goto(link)
            small.goto(f"{base_url}/#c={first}")
            small.locator("#messages li.message").nth(5).wait_for()
            shoot(small, "page-phone.png")
            browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
