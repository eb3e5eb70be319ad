"""The messages page in headless Chromium: a category wildcard filter, the
chart, and a CSV export with exactly the filtered rows."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collectors.models import LogMessage
from tests.cast import make_collector, make_source
from tests.conftest import artifacts_dir

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("transactional_db")]

CATEGORIES = {
    "Security/KnowBe4": 4,
    "Security/Phishing": 3,
    "SecurityOps/KnowBe4": 2,
    "Prod/Security/KnowBe4": 2,
}


def populate() -> None:
    source = make_source(make_collector("Production"), "KnowBe4 Events")
    now = timezone.now()
    n = 0
    for category, count in CATEGORIES.items():
        for _ in range(count):
            n += 1
            LogMessage.objects.create(
                source=source,
                event_id=f"evt-{n:03d}",
                raw=json.dumps(
                    {
                        "id": f"evt-{n:03d}",
                        "event_type": {"name": "phish_click"},
                        "user": {"email": f"user{n}@example.org"},
                        "risk": {"level": n % 10},
                    }
                ),
                message_time=now - timedelta(days=n % 6, hours=n),
                source_name=source.name,
                source_category=category,
                collector_name="Production",
                event_type="phish_click",
                risk_level=n % 10,
                user_email=f"user{n}@example.org",
            )


def test_it_filters_by_category_wildcard_and_exports_csv(page, live_server):
    populate()
    expected = set(
        LogMessage.objects.filter(
            source_category__in=["Security/KnowBe4", "Security/Phishing"]
        ).values_list("event_id", flat=True)
    )
    assert len(expected) == 7

    page.goto(live_server.url + reverse("messages"))
    assert page.locator("table.messages tbody tr").count() == 11
    page.fill("input[name=category]", "Security/*")
    page.select_option("select[name=range]", "7d")
    page.click("#message-filters button[type=submit]")
    page.wait_for_url("**category=Security*")
    assert "since=" not in page.url  # empty filters stay out of the URL

    categories = page.locator("table.messages td.category").all_inner_texts()
    assert sorted(set(categories)) == ["Security/KnowBe4", "Security/Phishing"]
    assert len(categories) == 7
    bars = page.locator("svg.day-chart rect.bar")
    counted = sum(
        int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())
    )
    assert counted == 7
    page.screenshot(path=str(artifacts_dir() / "messages.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    raw = download.path().read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM, for spreadsheets
    content = raw.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(content)))
    assert {r["event_id"] for r in rows} == expected
    assert {r["_sourceCategory"] for r in rows} == {
        "Security/KnowBe4",
        "Security/Phishing",
    }
    assert download.suggested_filename.endswith(".csv")
