"""The sandbox's KnowBe4 KMSAT Reporting API (`/v1/...`), stdlib only.

It follows `shared/knowbe4-reporting-api.md`: bare JSON arrays, `page`
(1-based) and `per_page` (default 100, at most 500; a page past the end is
`[]`), training campaigns 10 per page unless `exclude_percentages=true`, an
`X-Request-Id` on every answer, its own Bearer keys (a User Event key is
refused with 401), and the three limits per key:

- 4 requests in any one-second window (429, `Retry-After: 1`);
- 50 requests in any 60-second window, the burst limit (429, `Retry-After`:
  seconds until the window frees a slot). KnowBe4 says it starts after about
  five minutes of requests; the sandbox applies it from the first request,
  which is stricter and so safe to collect against;
- `2,000 + licensed users` requests over 24 hours counted from the key's first
  request, a rolling window and not a calendar day (429 "Daily Limit
  Exceeded", `Retry-After`: seconds until the window ends).

The data set is deterministic from the seed and `origin` (by default the time
the sandbox was created) and a function of "now" (`time.time()`, so
time_machine moves it): recipients open, click and report over the hours
after a test starts, a test closes after its duration, enrollments move from
Not Started through In Progress to Passed or Past Due, risk scores change each
day, one user is archived two hours after the origin (and so leaves the
members of its groups), and another leaves a group a day after the origin
and is back in it two days later. Snapshots taken at
different times therefore see real changes, and the same time sees the same
data.

Faults (`/_sandbox/faults` with a `path` prefix such as "/v1/users"), the
request log and the gate are the events side's, shared.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from collectors.knowbe4.sandbox import _int, _json, _not_found, _Response

MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 100
CAPPED_CAMPAIGNS_PER_PAGE = 10
RATE_LIMIT = 4  # per second
BURST_LIMIT = 50  # per 60 s
BURST_WINDOW = 60.0
DAILY_BASE = 2000  # + licensed users, per rolling 24 h from the first request
DAILY_WINDOW = 86_400.0
HOUR = 3600.0
DAY = 86_400.0

USER_BASE_ID = 3_000_000_000  # ids over 2**31, as the reference warns
GROUP_BASE_ID = 4_100_000_000
CAMPAIGN_BASE_ID = 5_000_000_000
PST_BASE_ID = 6_000_000_000
RECIPIENT_BASE_ID = 7_000_000_000
PURCHASE_BASE_ID = 8_000_000_000
POLICY_BASE_ID = 8_500_000_000
TRAINING_BASE_ID = 9_000_000_000
ENROLLMENT_BASE_ID = 9_500_000_000

FIRST = [
    ("Ada", "ada"), ("Zoë", "zoe"), ("Łukasz", "lukasz"), ("José", "jose"),
    ("Renée", "renee"), ("Søren", "soren"), ("Ngọc", "ngoc"), ("美咲", "misaki"),
    ("Ahmet", "ahmet"), ("Grace", "grace"), ("Linus", "linus"), ("Åsa", "asa"),
]  # fmt: skip
LAST = [
    ("Lovelace", "lovelace"), ("Ångström", "angstrom"), ("Nowak", "nowak"),
    ("García", "garcia"), ("Müller", "mueller"), ("O'Brien", "obrien"),
    ("Nguyễn", "nguyen"), ("山田", "yamada"), ("Yılmaz", "yilmaz"),
    ("Dvořák", "dvorak"), ("Hopper", "hopper"),
]  # fmt: skip
DEPARTMENTS = ["Finance", "Engineering", "Sales", "Human Resources", "Support", None]
LOCATIONS = ["Clearwater", "London", "Montréal", "Berlin", None]
GROUPS = [
    ("Finance", "console_group"),
    ("Engineering", "console_group"),
    ("Sales", "console_group"),
    ("Équipe Montréal", "console_group"),
    ("Support", "console_group"),
    ("Everyone", "smart_group"),
    ("Former contractors", "console_group"),  # archived, no members
]
PHISHING_CAMPAIGNS = [
    ("Quarterly baseline", "phishing"),
    ("Invoice lures", "phishing"),
    ("Executive spoof", "phishing"),
    ("Help-desk callback", "callback"),
]
TESTS = 8  # security tests; the last one is in error
TEST_DAYS = 3  # a test runs three days, then closes
TEMPLATES = [
    ("Your parcel could not be delivered", "Shipping"),
    ("Unpaid invoice #4471", "Finance"),
    ("Password expires today", "IT"),
    ("Benefits enrollment 2027", "HR"),
]
OSES = ["Windows 11", "macOS 14", "iOS 17", "Android 14"]
BROWSERS = ["Chrome", "Edge", "Safari", "Firefox"]
PURCHASES = [
    ("Kevin Mitnick Security Awareness Training", "Training Module"),
    ("Phishing Red Flags", "Training Module"),
    ("Données personnelles et RGPD", "Video Module"),
]
POLICIES = [
    ("Acceptable Use Policy", "Uploaded Policy"),
    ("Clean Desk", "Uploaded Policy"),
]
TRAINING_CAMPAIGNS = 3  # started 2, 22 and 42 days before the origin
TRAINING_DUE_DAYS = 14
# User 7 leaves its first group ("Sales") a day after the origin and is back
# two days later: a member removed, then re-added, as time moves.
MOVER = 7
MOVER_LEAVES = 1 * 86_400.0
MOVER_RETURNS = 3 * 86_400.0
HISTORY_DAYS = 400  # risk histories reach this far back before the origin
SIX_MONTHS = 183


def iso(ts: float | None) -> str | None:
    """The Reporting API's time format (UTC, seconds, Z), None kept."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _score(*parts: object, day: date, lo: int = 5, span: int = 60) -> float:
    """A risk score that is stable within a UTC day and moves between days."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    base = lo + h[0] % span
    wobble = (day.toordinal() * (h[1] % 7 + 1) + h[2]) % 9 - 4
    return round(max(0.0, base + wobble + (h[3] % 10) / 10), 1)


class ReportingData:
    """The simulated account: static records built once, times resolved at
    `now` only for the records a page returns."""

    def __init__(
        self, *, seed: int | str = 1, users: int = 60, origin: float, seats: int
    ) -> None:
        self.seed = seed
        self.origin = origin
        self.seats = seats
        self.user_count = users
        self._users = [self._make_user(i) for i in range(users)]
        self._user_index = {u["id"]: i for i, u in enumerate(self._users)}
        self._recipients: dict[int, list[tuple]] = {}
        self._counts: dict[int, dict[str, list[float]]] = {}
        self._enrollments: dict[int, list[tuple]] = {}

    # ----- users and groups -------------------------------------------------

    def _make_user(self, i: int) -> dict:
        first, first_ascii = FIRST[i % len(FIRST)]
        last, last_ascii = LAST[(i // len(FIRST) + i) % len(LAST)]
        tag = "+phish" if i % 7 == 3 else ("-ops" if i % 11 == 5 else "")
        manager = (i - 1) // 8 if i > 0 else None
        archived_at = None
        if i % 19 == 18:
            archived_at = self.origin - 30 * DAY
        elif i == 5:
            archived_at = self.origin + 2 * HOUR  # time moves: a change to see
        m_first = FIRST[manager % len(FIRST)][1] if manager is not None else None
        return {
            "id": USER_BASE_ID + i,
            "employee_number": None if i % 17 == 16 else f"E{10_000 + i}",
            "first_name": first,
            "last_name": last,
            "job_title": ["Analyst", "Engineer", "Manager", "Clerk"][i % 4],
            "email": f"{first_ascii}.{last_ascii}{tag}{i}@example.com",
            "phish_prone_percentage": round((i * 37 % 400) / 10, 1),
            "phone_number": f"+1-555-01{i % 100:02d}",
            "extension": None,
            "mobile_phone_number": None,
            "location": LOCATIONS[i % len(LOCATIONS)],
            "division": None,
            "manager_name": None
            if manager is None
            else f"{FIRST[manager % len(FIRST)][0]} {manager}",
            "manager_email": None
            if manager is None
            else f"{m_first}.{manager}@example.com",
            "provisioning_managed": False,
            "provisioning_guid": None,
            "groups": self._groups_of(i),
            "current_risk_score": None,
            "aliases": [],
            "joined_on": iso(self.origin - (400 - i % 300) * DAY),
            "last_sign_in": None,
            "status": "active",
            "organization": "Sandbox Corp",
            "department": DEPARTMENTS[i % len(DEPARTMENTS)],
            "language": "English - United States",
            "comment": "",
            "employee_start_date": None,
            "archived_at": None,
            "custom_field_1": f"cost-centre-{i % 4}",
            "custom_field_2": None,
            "_archived_ts": archived_at,
        }

    @staticmethod
    def _groups_of(i: int) -> list[int]:
        return [GROUP_BASE_ID + i % 5, GROUP_BASE_ID + 5]

    def groups_at(self, u: dict, now: float) -> list[int]:
        """The groups of user `u` at `now`: the mover is out of its first
        group from one to three days after the origin, then back."""
        groups = u["groups"]
        if u["id"] == USER_BASE_ID + MOVER and (
            self.origin + MOVER_LEAVES <= now < self.origin + MOVER_RETURNS
        ):
            return groups[1:]
        return groups

    def archived(self, user: dict, now: float) -> bool:
        ts = user["_archived_ts"]
        return ts is not None and ts <= now

    def user(self, u: dict, now: float, *, expand_group: bool = False) -> dict:
        """A user as `GET /v1/users` sends it at `now`."""
        out = {k: v for k, v in u.items() if not k.startswith("_")}
        i = u["id"] - USER_BASE_ID
        if self.archived(u, now):
            out["status"] = "archived"
            out["archived_at"] = iso(u["_archived_ts"])
            out["groups"] = []
        else:
            out["groups"] = self.groups_at(u, now)
        out["current_risk_score"] = _score(self.seed, "u", i, day=_day(now))
        out["last_sign_in"] = iso(now - (now - self.origin + i * 977) % (3 * DAY))
        if expand_group:
            out["groups"] = [
                {"id": g, "name": GROUPS[g - GROUP_BASE_ID][0]} for g in out["groups"]
            ]
        return out

    def users(self, now: float, query: dict) -> list[dict]:
        status = arg(query, "status")
        group = _int(arg(query, "group_id"), None)
        picked = []
        for u in self._users:
            archived = self.archived(u, now)
            if status == "active" and archived or status == "archived" and not archived:
                continue
            if group is not None and (archived or group not in self.groups_at(u, now)):
                continue
            picked.append(u)
        return picked

    def user_by_id(self, user_id: int) -> dict | None:
        i = self._user_index.get(user_id)
        return None if i is None else self._users[i]

    def group(self, g: int, now: float) -> dict:
        name, kind = GROUPS[g]
        members = self.members(g, now)
        return {
            "id": GROUP_BASE_ID + g,
            "name": name,
            "group_type": kind,
            "provisioning_guid": None,
            "member_count": len(members),
            "current_risk_score": _score(self.seed, "g", g, day=_day(now)),
            "status": "archived" if g == len(GROUPS) - 1 else "active",
        }

    def groups(self, now: float, query: dict) -> list[dict]:
        status = arg(query, "status")
        out = [self.group(g, now) for g in range(len(GROUPS))]
        return [g for g in out if not status or g["status"] == status]

    def members(self, g: int, now: float) -> list[dict]:
        gid = GROUP_BASE_ID + g
        return [
            u
            for u in self._users
            if gid in self.groups_at(u, now)
            and not self.archived(u, now)
            and g != len(GROUPS) - 1
        ]

    def history(self, parts: tuple, now: float, full: bool) -> list[dict]:
        """Daily risk scores, newest first: six months, or all with full=true."""
        today = _day(now)
        first = _day(self.origin) - timedelta(days=HISTORY_DAYS)
        if not full:
            first = max(first, today - timedelta(days=SIX_MONTHS))
        out, day = [], today
        while day >= first:
            out.append({"risk_score": _score(*parts, day=day), "date": day.isoformat()})
            day -= timedelta(days=1)
        return out

    def account(self, now: float) -> dict:
        return {
            "name": "Sandbox Corp",
            "type": "paid",
            "domains": ["example.com", "example.org"],
            "admins": [
                {
                    "id": USER_BASE_ID,
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "email": "ada.lovelace0@example.com",
                }
            ],
            "subscription_level": "Diamond",
            "subscription_end_date": None,
            "number_of_seats": self.seats,
            "current_risk_score": _score(self.seed, "account", day=_day(now)),
        }

    # ----- phishing -----------------------------------------------------------

    def test_start(self, t: int) -> float | None:
        """Test 0 started an hour before the origin, each next one 5 days
        earlier; the last test is in error and never started."""
        if t == TESTS - 1:
            return None
        return self.origin - HOUR - t * 5 * DAY

    def test_group(self, t: int) -> int:
        return 5 if t % 3 == 0 else t % 5

    def campaign_of(self, t: int) -> int:
        """The campaign of test `t` (the test in error is the baseline's)."""
        return 0 if t == TESTS - 1 else t % len(PHISHING_CAMPAIGNS)

    def recipients_static(self, t: int) -> list[tuple]:
        """(user index, delivered, opened, clicked, replied, attachment,
        macro, data entered, reported offsets in s or None, qr scanned, rng
        index) per recipient, built once per test."""
        cached = self._recipients.get(t)
        if cached is not None:
            return cached
        start = self.test_start(t)
        rows: list[tuple] = []
        if start is not None:
            gid = GROUP_BASE_ID + self.test_group(t)
            for i, u in enumerate(self._users):
                if gid not in u["groups"] or (
                    u["_archived_ts"] is not None and u["_archived_ts"] <= start
                ):
                    continue
                rng = random.Random(f"{self.seed}:r:{t}:{i}")
                delivered = rng.uniform(0, 2 * HOUR)
                opened = (
                    delivered + rng.uniform(60, 30 * HOUR)
                    if rng.random() < 0.6
                    else None
                )
                clicked = (
                    opened + rng.uniform(5, 1800)
                    if opened is not None and rng.random() < 0.4
                    else None
                )
                entered = (
                    clicked + rng.uniform(5, 600)
                    if clicked is not None and rng.random() < 0.3
                    else None
                )
                attach = (
                    opened + rng.uniform(5, 900)
                    if opened is not None and rng.random() < 0.15
                    else None
                )
                macro = (
                    attach + 30 if attach is not None and rng.random() < 0.5 else None
                )
                replied = (
                    opened + rng.uniform(60, 3600)
                    if opened is not None and rng.random() < 0.08
                    else None
                )
                reported = (
                    delivered + rng.uniform(120, 48 * HOUR)
                    if clicked is None and rng.random() < 0.35
                    else None
                )
                qr = rng.random() < 0.05
                rows.append(
                    (i, delivered, opened, clicked, replied, attach, macro, entered,
                     reported, qr, rng.randrange(1 << 30))
                )  # fmt: skip
        self._recipients[t] = rows
        return rows

    RECIPIENT_TIMES = (
        "delivered_at", "opened_at", "clicked_at", "replied_at",
        "attachment_opened_at", "macro_enabled_at", "data_entered_at", "reported_at",
    )  # fmt: skip

    def recipient(self, t: int, row: tuple, now: float) -> dict:
        start = self.test_start(t) or 0.0
        i = row[0]
        u = self._users[i]
        times = {
            name: iso(start + off) if off is not None and start + off <= now else None
            for name, off in zip(self.RECIPIENT_TIMES, row[1:9], strict=True)
        }
        seen = times["opened_at"] or times["clicked_at"]
        r = row[10]
        return {
            "recipient_id": RECIPIENT_BASE_ID + t * 1_000_000 + i,
            "pst_id": PST_BASE_ID + t,
            "user": {
                "id": u["id"],
                "active_directory_guid": None,
                "first_name": u["first_name"],
                "last_name": u["last_name"],
                "email": u["email"],
                "employee_number": u["employee_number"],
            },
            "template": self.template(t),
            "scheduled_at": iso(start),
            **times,
            "bounced_at": None,
            "qr_code_scanned": bool(row[9]) and times["delivered_at"] is not None,
            "ip": f"198.51.100.{r % 250 + 1}" if seen else None,
            "ip_location": "Clearwater, FL" if seen else None,
            "browser": BROWSERS[r % len(BROWSERS)] if seen else None,
            "browser_version": f"{120 + r % 9}.0" if seen else None,
            "os": OSES[r % len(OSES)] if seen else None,
        }

    def template(self, t: int) -> dict:
        if t == TESTS - 1:
            return {"id": None, "name": None}
        name, _ = TEMPLATES[t % len(TEMPLATES)]
        return {"id": 1_000 + t % len(TEMPLATES), "name": name}

    def _times(self, t: int) -> dict[str, list[float]]:
        """Per test, the sorted absolute times of each recipient event, so a
        test's counts at any `now` are a bisect, not a walk of recipients."""
        cached = self._counts.get(t)
        if cached is None:
            start = self.test_start(t) or 0.0
            rows = self.recipients_static(t)
            cached = {
                name: sorted(start + r[k] for r in rows if r[k] is not None)
                for k, name in enumerate(self.RECIPIENT_TIMES, start=1)
            }
            self._counts[t] = cached
        return cached

    def security_test(self, t: int, now: float) -> dict:
        start = self.test_start(t)
        c = self.campaign_of(t)
        g = self.test_group(t)
        if start is None:
            status, counts = "Error", dict.fromkeys(self.RECIPIENT_TIMES)
            scheduled, ppp = None, None
        else:
            status = "Active" if now < start + TEST_DAYS * DAY else "Closed"
            times = self._times(t)
            counts = {n: bisect.bisect_right(v, now) for n, v in times.items()}
            scheduled = len(self.recipients_static(t))
            ppp = round(100 * counts["clicked_at"] / scheduled, 1) if scheduled else 0.0
        return {
            "campaign_id": CAMPAIGN_BASE_ID + c,
            "pst_id": PST_BASE_ID + t,
            "status": status,
            "name": f"{PHISHING_CAMPAIGNS[c][0]} #{t + 1}",
            "groups": [{"group_id": GROUP_BASE_ID + g, "name": GROUPS[g][0]}],
            "phish_prone_percentage": ppp,
            "started_at": iso(start),
            "duration": TEST_DAYS,
            "categories": [{"category_id": 1 + t % 4, "name": TEMPLATES[t % 4][1]}],
            "template": self.template(t),
            "landing_page": {"id": 77, "name": "Oops! You clicked"},
            "scheduled_count": scheduled,
            "delivered_count": counts["delivered_at"],
            "opened_count": counts["opened_at"],
            "clicked_count": counts["clicked_at"],
            "replied_count": counts["replied_at"],
            "attachment_open_count": counts["attachment_opened_at"],
            "macro_enabled_count": counts["macro_enabled_at"],
            "data_entered_count": counts["data_entered_at"],
            "qr_code_scanned_count": None if start is None else 0,
            "reported_count": counts["reported_at"],
            "bounced_count": None if start is None else 0,
        }

    def tests_visible(self, now: float, query: dict, campaign: int | None = None):
        callback = arg(query, "campaign_type") == "callback"
        out = []
        for t in range(TESTS):
            start = self.test_start(t)
            if start is not None and start > now:
                continue
            c = self.campaign_of(t)
            if campaign is not None and c != campaign:
                continue
            if callback != (PHISHING_CAMPAIGNS[c][1] == "callback"):
                continue
            out.append(t)
        return out

    def phishing_campaign(self, c: int, now: float) -> dict:
        tests = [t for t in range(TESTS) if self.campaign_of(t) == c]
        return {
            "campaign_id": CAMPAIGN_BASE_ID + c,
            "name": PHISHING_CAMPAIGNS[c][0],
            "groups": [{"group_id": GROUP_BASE_ID + 5, "name": "Everyone"}],
            "last_phish_prone_percentage": None,
            "last_run": iso(max((self.test_start(t) or 0) for t in tests) or None),
            "status": "Active",
            "hidden": False,
            "send_duration": "3 Business Days",
            "track_duration": "3 Days",
            "frequency": "Monthly",
            "difficulty_filter": [1, 2, 3, 4, 5],
            "create_date": iso(self.origin - 60 * DAY),
            "psts_count": len(tests),
            "psts": [
                {
                    "pst_id": PST_BASE_ID + t,
                    "status": self.security_test(t, now)["status"],
                    "start_date": iso(self.test_start(t)),
                    "users_count": len(self.recipients_static(t)),
                }
                for t in tests
            ],
        }

    # ----- training -------------------------------------------------------------

    def training_start(self, k: int) -> float:
        return self.origin - (2 + 20 * k) * DAY

    def training_campaign(self, k: int, now: float, percentages: bool) -> dict:
        start = self.training_start(k)
        due = start + TRAINING_DUE_DAYS * DAY
        doc = {
            "campaign_id": TRAINING_BASE_ID + k,
            "name": f"Training wave {k + 1}",
            "groups": [{"group_id": GROUP_BASE_ID + 5, "name": "Everyone"}],
            "status": "In Progress" if now < due else "Completed",
            "content": [
                {
                    "store_purchase_id": PURCHASE_BASE_ID + k % len(PURCHASES),
                    "name": PURCHASES[k % len(PURCHASES)][0],
                    "type": PURCHASES[k % len(PURCHASES)][1],
                }
            ],
            "duration_type": "Specific End Date",
            "start_date": iso(start),
            "end_date": iso(due),
            "relative_duration": None,
            "auto_enroll": True,
            "allow_multiple_enrollments": False,
        }
        if percentages:
            rows = self.enrollments_static(k)
            done = sum(1 for r in rows if r[2] is not None and start + r[2] <= now)
            doc["completion_percentage"] = round(100 * done / len(rows)) if rows else 0
        return doc

    def enrollments_static(self, k: int) -> list[tuple]:
        """(user index, started offset, completed offset, time spent)."""
        cached = self._enrollments.get(k)
        if cached is None:
            cached = []
            start = self.training_start(k)
            for i, u in enumerate(self._users):
                if u["_archived_ts"] is not None and u["_archived_ts"] <= start:
                    continue
                rng = random.Random(f"{self.seed}:e:{k}:{i}")
                began = rng.uniform(HOUR, 6 * DAY) if rng.random() < 0.85 else None
                done = (
                    began + rng.uniform(HOUR, 16 * DAY)
                    if began is not None and rng.random() < 0.8
                    else None
                )
                cached.append((i, began, done, rng.randrange(300, 3600)))
            self._enrollments[k] = cached
        return cached

    def enrollment(self, k: int, row: tuple, now: float, query: dict) -> dict:
        start = self.training_start(k)
        due = start + TRAINING_DUE_DAYS * DAY
        i, began, done, spent = row
        u = self._users[i]
        began_ts = start + began if began is not None and start + began <= now else None
        done_ts = start + done if done is not None and start + done <= now else None
        if done_ts is not None:
            status = "Passed"
        elif now > due:
            status = "Past Due"
        elif began_ts is not None:
            status = "In Progress"
        else:
            status = "Not Started"
        purchase = k % len(PURCHASES)
        doc = {
            "enrollment_id": ENROLLMENT_BASE_ID + k * 1_000_000 + i,
            "content_type": PURCHASES[purchase][1],
            "module_name": PURCHASES[purchase][0],
            "user": {
                "id": u["id"],
                "first_name": u["first_name"],
                "last_name": u["last_name"],
                "email": u["email"],
            },
            "campaign_name": f"Training wave {k + 1}",
            "enrollment_date": iso(start),
            "start_date": iso(began_ts),
            "completion_date": iso(done_ts),
            "status": status,
            "time_spent": spent if done_ts is not None else 0,
            "policy_acknowledged": done_ts is not None,
        }
        if flag(query, "include_campaign_id"):
            doc["campaign_id"] = TRAINING_BASE_ID + k
        if flag(query, "include_store_purchase_id"):
            doc["store_purchase_id"] = PURCHASE_BASE_ID + purchase
        if flag(query, "include_employee_number"):
            doc["user"]["employee_number"] = u["employee_number"]
        return doc

    def enrollments(self, now: float, query: dict) -> list[tuple[int, tuple]]:
        campaign = _int(arg(query, "campaign_id"), None)
        purchase = _int(arg(query, "store_purchase_id"), None)
        user = _int(arg(query, "user_id"), None)
        no_archived = flag(query, "exclude_archived_users")
        out = []
        for k in range(TRAINING_CAMPAIGNS):
            if self.training_start(k) > now:
                continue
            if campaign is not None and campaign != TRAINING_BASE_ID + k:
                continue
            if purchase is not None and purchase != PURCHASE_BASE_ID + k % len(
                PURCHASES
            ):
                continue
            for row in self.enrollments_static(k):
                u = self._users[row[0]]
                if user is not None and u["id"] != user:
                    continue
                if no_archived and self.archived(u, now):
                    continue
                out.append((k, row))
        return out

    def purchase(self, p: int) -> dict:
        name, kind = PURCHASES[p]
        return {
            "store_purchase_id": PURCHASE_BASE_ID + p,
            "content_type": "Store Purchase",
            "name": name,
            "description": f"{name} ({kind})",
            "type": kind,
            "duration": 15 + 10 * p,
            "retired": False,
            "retirement_date": None,
            "publish_date": iso(self.origin - 500 * DAY),
            "publisher": "KnowBe4",
            "purchase_date": iso(self.origin - 100 * DAY),
            "policy_url": None,
        }

    def policy(self, p: int) -> dict:
        name, kind = POLICIES[p]
        return {
            "policy_id": POLICY_BASE_ID + p,
            "content_type": kind,
            "name": name,
            "minimum_time": 3,
            "default_language": "en-us",
            "status": 1,
        }


def arg(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def flag(query: dict, name: str) -> bool:
    return (arg(query, name) or "").lower() == "true"


def page_of(items: list, query: dict, render: Callable[[Any], dict], cap: int = 0):
    """One bare-array page of `items` (rendered only for the page)."""
    page = _int(arg(query, "page"), 1, lo=1)
    per_page = _int(arg(query, "per_page"), DEFAULT_PER_PAGE, lo=1, hi=MAX_PER_PAGE)
    if cap:
        per_page = min(per_page, cap)
    chunk = items[(page - 1) * per_page : page * per_page]
    return _Response(200, _json([render(item) for item in chunk]))


class ReportingLimits:
    """The three limits of one Reporting key (see the module docstring)."""

    def __init__(self, daily: int) -> None:
        self.daily = daily
        self.second: deque[float] = deque()
        self.minute: deque[float] = deque()
        self.window_start: float | None = None
        self.used = 0

    def check(self, now: float) -> _Response | None:
        """The 429 this request earns, or None (and the request is counted)."""
        if self.window_start is not None and now >= self.window_start + DAILY_WINDOW:
            self.window_start, self.used = None, 0
        if self.window_start is not None and self.used >= self.daily:
            wait = max(1, int(self.window_start + DAILY_WINDOW - now + 0.999))
            return _Response(
                429,
                _json({"message": "Daily Limit Exceeded"}),
                {"Retry-After": str(wait)},
            )
        while self.minute and self.minute[0] <= now - BURST_WINDOW:
            self.minute.popleft()
        if len(self.minute) >= BURST_LIMIT:
            wait = max(1, int(self.minute[0] + BURST_WINDOW - now + 0.999))
            return _Response(
                429,
                _json({"message": "Burst Limit Exceeded"}),
                {"Retry-After": str(wait)},
            )
        while self.second and self.second[0] <= now - 1.0:
            self.second.popleft()
        if len(self.second) >= RATE_LIMIT:
            return _Response(
                429, _json({"message": "Too Many Requests"}), {"Retry-After": "1"}
            )
        self.second.append(now)
        self.minute.append(now)
        if self.window_start is None:
            self.window_start = now
        self.used += 1
        return None

    def status(self, now: float) -> dict:
        return {
            "daily_limit": self.daily,
            "used": self.used,
            "window_start": self.window_start,
            "window_ends": None
            if self.window_start is None
            else self.window_start + DAILY_WINDOW,
        }


class ReportingAPI:
    """Routes `/v1/...` requests of the sandbox to `ReportingData`."""

    def __init__(
        self,
        *,
        keys: list[str],
        seed: int | str = 1,
        users: int = 60,
        origin: float | None = None,
        licensed_users: int | None = None,
        daily_limit: int | None = None,
        rate_limit: bool = True,
        clock: Callable[[], float],
    ) -> None:
        self.keys = list(keys)
        origin = clock() if origin is None else origin
        self.licensed_users = users if licensed_users is None else licensed_users
        self.data = ReportingData(
            seed=seed, users=users, origin=origin, seats=self.licensed_users
        )
        self.daily_limit = (
            DAILY_BASE + self.licensed_users if daily_limit is None else daily_limit
        )
        self.rate_limit = rate_limit
        self.limits: dict[str, ReportingLimits] = {}

    def check_limits(self, khash: str, now: float) -> _Response | None:
        if not self.rate_limit:
            return None
        limits = self.limits.get(khash)
        if limits is None:
            limits = self.limits[khash] = ReportingLimits(self.daily_limit)
        return limits.check(now)

    def reset_limits(self) -> None:
        self.limits.clear()

    def config(self) -> dict:
        return {
            "users": self.data.user_count,
            "origin": iso(self.data.origin),
            "licensed_users": self.licensed_users,
            "daily_limit": self.daily_limit,
            "rate_limit": self.rate_limit,
        }

    def route(self, method: str, path: str, query: dict, now: float) -> _Response:
        """Answer one authorised, within-limits request (GET only)."""
        if method != "GET":
            return _Response(405, _json({"message": "Method Not Allowed"}))
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        resp = self._route(parts, query, now)
        resp.headers.setdefault("X-Request-Id", str(uuid.uuid4()))
        return resp

    def _route(self, parts: list[str], query: dict, now: float) -> _Response:
        d = self.data
        head, rest = (parts[0] if parts else ""), parts[1:]
        full = flag(query, "full")
        if head in ("users", "groups"):
            # /v1/users[/{id}[/risk_score_history]], the same for groups
            ids = [_id(p) for p in rest[::2]]
            if any(i is None for i in ids):
                return _not_found()
            shape = rest[1::2]
        if head == "account":
            if not rest:
                return _Response(200, _json(d.account(now)))
            if rest == ["risk_score_history"]:
                return _Response(200, _json(d.history((d.seed, "account"), now, full)))
        elif head == "users":
            return self._users(ids, shape, query, now, full)
        elif head == "groups":
            return self._groups(ids, shape, query, now, full)
        elif head == "phishing":
            return self._phishing(rest, query, now)
        elif head == "training":
            return self._training(rest, query, now)
        return _not_found()

    def _users(self, ids, shape, query, now, full) -> _Response:
        d = self.data
        expand = arg(query, "expand") == "group"
        if not ids:
            return page_of(
                d.users(now, query),
                query,
                lambda u: d.user(u, now, expand_group=expand),
            )
        u = d.user_by_id(ids[0])
        if u is None or len(ids) > 1:
            return _not_found()
        if not shape:
            return _Response(200, _json(d.user(u, now, expand_group=expand)))
        if shape == ["risk_score_history"]:
            i = u["id"] - USER_BASE_ID
            return _Response(200, _json(d.history((d.seed, "u", i), now, full)))
        return _not_found()

    def _groups(self, ids, shape, query, now, full) -> _Response:
        d = self.data
        if not ids:
            return page_of(d.groups(now, query), query, lambda g: g)
        g = ids[0] - GROUP_BASE_ID
        if not 0 <= g < len(GROUPS) or len(ids) > 1:
            return _not_found()
        if not shape:
            return _Response(200, _json(d.group(g, now)))
        if shape == ["members"]:
            return page_of(d.members(g, now), query, lambda u: d.user(u, now))
        if shape == ["risk_score_history"]:
            return _Response(200, _json(d.history((d.seed, "g", g), now, full)))
        return _not_found()

    def _phishing(self, rest: list[str], query: dict, now: float) -> _Response:
        d = self.data
        if rest[:1] == ["campaigns"]:
            callback = arg(query, "campaign_type") == "callback"
            campaigns = [
                c
                for c in range(len(PHISHING_CAMPAIGNS))
                if callback == (PHISHING_CAMPAIGNS[c][1] == "callback")
            ]
            if len(rest) == 1:
                return page_of(campaigns, query, lambda c: d.phishing_campaign(c, now))
            c = _index(rest[1], CAMPAIGN_BASE_ID, campaigns)
            if c is None:
                return _not_found()
            if len(rest) == 2:
                return _Response(200, _json(d.phishing_campaign(c, now)))
            if rest[2:] == ["security_tests"]:
                tests = d.tests_visible(now, query, campaign=c)
                return page_of(tests, query, lambda t: d.security_test(t, now))
            return _not_found()
        if rest[:1] == ["security_tests"]:
            tests = d.tests_visible(now, query)
            if len(rest) == 1:
                return page_of(tests, query, lambda t: d.security_test(t, now))
            t = _index(rest[1], PST_BASE_ID, tests)
            if t is None:
                return _not_found()
            if len(rest) == 2:
                return _Response(200, _json(d.security_test(t, now)))
            if rest[2] != "recipients" or len(rest) > 4:
                return _not_found()
            rows = d.recipients_static(t)
            if len(rest) == 3:
                return page_of(rows, query, lambda r: d.recipient(t, r, now))
            rid = _id(rest[3])
            for row in rows:
                if rid == RECIPIENT_BASE_ID + t * 1_000_000 + row[0]:
                    return _Response(200, _json(d.recipient(t, row, now)))
        return _not_found()

    def _training(self, rest: list[str], query: dict, now: float) -> _Response:
        d = self.data
        kind = rest[0] if rest else ""
        one = _id(rest[1]) if len(rest) == 2 else None
        if len(rest) > 2 or (len(rest) == 2 and one is None):
            return _not_found()
        if kind == "store_purchases":
            items = list(range(len(PURCHASES)))
            return _list_or_one(items, one, PURCHASE_BASE_ID, query, d.purchase)
        if kind == "policies":
            items = list(range(len(POLICIES)))
            return _list_or_one(items, one, POLICY_BASE_ID, query, d.policy)
        if kind == "campaigns":
            items = [k for k in range(TRAINING_CAMPAIGNS) if d.training_start(k) <= now]
            percentages = not flag(query, "exclude_percentages")
            render = lambda k: d.training_campaign(k, now, percentages)  # noqa: E731
            cap = CAPPED_CAMPAIGNS_PER_PAGE if percentages else 0
            return _list_or_one(items, one, TRAINING_BASE_ID, query, render, cap)
        if kind == "enrollments":
            rows = d.enrollments(now, query)
            if one is None:
                return page_of(rows, query, lambda kr: d.enrollment(*kr, now, query))
            for k, row in rows:
                if one == ENROLLMENT_BASE_ID + k * 1_000_000 + row[0]:
                    return _Response(200, _json(d.enrollment(k, row, now, query)))
        return _not_found()


def _list_or_one(items, one, base, query, render, cap: int = 0) -> _Response:
    if one is None:
        return page_of(items, query, render, cap)
    if one - base in items:
        return _Response(200, _json(render(one - base)))
    return _not_found()


def _id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def _index(text: str, base: int, allowed: list[int]) -> int | None:
    number = _id(text)
    if number is None or number - base not in allowed:
        return None
    return number - base
