"""Drives olive's status page in Debian's Chromium for tests/status_page.rs.

Usage: status_page.py URL

Loads the page and waits for its first sample, prints one JSON line
({"loaded": ...}), then waits for a line on stdin (the test has started
traffic) and for the plots to show it, and prints one more JSON line with
what the page shows. Exits non-zero (with the reason on stderr) when the
page fails to load, throws, or never updates.
"""

import json
import sys

from playwright.sync_api import sync_playwright

# Never a downloaded browser: Debian's, with nothing that calls out.
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


def shown(page):
    return page.evaluate(
        """() => ({
        state: document.getElementById("state").textContent,
        connections: Number(document.getElementById("chart-connections").dataset.latest),
        messages: Number(document.getElementById("chart-messages").dataset.latest),
        latency: Number(document.getElementById("chart-latency").dataset.latest),
        delivered_points: document.querySelector('#chart-messages polyline[data-series="delivered"]')
            ?.getAttribute("points") ?? null,
        classes: [...document.querySelectorAll("#classes tr")].map(tr =>
            [...tr.children].map(td => td.textContent)),
    })"""
    )


def main():
    url = sys.argv[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(url)
        if response is None or response.status != 200:
            sys.exit(f"GET {url}: {response and response.status}")
        page.wait_for_function(
            "document.getElementById('state').textContent.startsWith('live, updated')", timeout=WAIT_MS
        )
        print(json.dumps({"loaded": shown(page), "errors": errors}), flush=True)

        sys.stdin.readline()
        page.wait_for_function(
            """() => Number(document.getElementById("chart-messages").dataset.latest) > 0
                && Number(document.getElementById("chart-latency").dataset.latest) > 0
                && document.getElementById("classes").textContent.includes("olive.status.note")""",
            timeout=WAIT_MS,
        )
        print(json.dumps({"updated": shown(page), "errors": errors}), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
