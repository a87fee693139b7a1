"""End to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real broker: log in, read the dashboard, filter the worklist, open an order's
timeline, retry a dead-lettered message.

In CI (``CI=true``) it must run; elsewhere it is skipped, with the reason, when Chromium or
Playwright is missing (``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from broker.app import Broker
from broker.store.schema import OutboxRow
from hl7.ack import read_ack
from hl7.client import MLLPClient
from tests.e2e.test_worklist import SCHEDULE, running
from tests.web.support import TOKEN, add_outbox
from tests.web.test_broker import broker_config

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # chromium() skips, or fails in CI, with the reason
    sync_playwright = None

TIMEOUT_MS = 20_000
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium() -> str:
    """Debian's Chromium, or the reason the test cannot run (a failure in CI)."""
    found = shutil.which("chromium") or "/usr/bin/chromium"
    reason = ""
    if not Path(found).exists():
        reason = "chromium is not installed (apt-get install chromium; .ci/run does)"
    elif shutil.which("chromium") is None and not os.access(found, os.X_OK):
        reason = f"{found} is not executable"
    if sync_playwright is None:
        reason = "playwright (Python) is not installed: pip install -e '.[test]'"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running(broker_config(tmp_path)) as started:
        today = date.today()
        with MLLPClient("127.0.0.1", started.hl7_port, ack_timeout=20) as mllp:
            for scheduled in SCHEDULE:
                assert read_ack(mllp.send(scheduled.message(today))).code == "AA"
        yield started


@pytest.fixture
def page(broker: Broker) -> Iterator[Any]:
    executable = chromium()
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            opened = browser.new_page()
            opened.set_default_timeout(TIMEOUT_MS)
            yield opened
        finally:
            browser.close()


def test_an_operator_reads_filters_follows_and_retries(broker: Broker, page: Any) -> None:
    assert broker.store is not None
    dead = add_outbox(
        broker.store, state="dead", order_id=1, control_id="DEAD1",
        last_error="AE: the RIS does not know this order",
    )  # fmt: skip
    base = f"http://127.0.0.1:{broker.http_port}"

    page.goto(f"{base}/")
    assert "/login" in page.url  # patient data needs the token
    page.fill("input[name=token]", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert page.inner_text("h1").startswith("Dashboard")
    today_table = page.inner_text("#today")
    assert "CT" in today_table and "MR" in today_table
    assert "the RIS does not know this order" in page.inner_text("main")

    page.click("nav >> text=Worklist")
    page.fill("#worklist-filters input[name=modality]", "MR")
    page.click("#worklist-filters button[type=submit]")
    page.wait_for_url("**/worklist?*modality=MR*")
    rows = page.locator("#worklist tbody tr")
    assert rows.count() == 1
    assert "Roe^Jane" in rows.first.inner_text()

    rows.first.locator("a.timeline-link").click()
    page.wait_for_url("**/orders/*/timeline")
    events = page.inner_text("#events")
    assert "ORM^O01 received, answered AA" in events
    assert "E2ESPS2 scheduled for" in events

    page.goto(f"{base}/outbox")
    row = page.locator(f"#outbox-{dead}")
    assert "dead" in row.locator(".state").inner_text()
    row.locator("button", has_text="Retry").click()
    page.wait_for_selector(".notice")
    assert f"Message {dead} queued for retry" in page.inner_text(".notice")
    with Session(broker.store.engine) as session:
        retried = session.get_one(OutboxRow, dead)
        assert (retried.state, retried.attempts) == ("pending", 0)
    ops = page.goto(f"{base}/journal?direction=ops")
    assert ops is not None and ops.ok
    assert "CONSOLE^RETRY" in page.inner_text("#journal")
