"""The snapshot reader: a Reporting source's datasets, as a change history.

The Reporting API has no "changed since" filter, so each poll reads every
enabled dataset whole (`per_page=500` until a short page) and stores a record
version only when it differs from the record's latest stored version; its
identity (source, data type, record id, identity hash) is unique in the
database, the hash following that latest version (`records.follow`).

How a snapshot's checkpoint works: when a snapshot starts, its plan (the list
endpoints of the enabled data types) is written to `Source.snapshot`. Every
request is followed by ONE transaction that reads the latest stored versions
of the page's records (one query) and holds the versions that follow them,
its quarantined records and the checkpoint after it (the task and page
reached, the child tasks found so far: each phishing test's recipients, each
group's members, and the request windows), through `lifecycle.commit_page`,
which also checks the lease. A snapshot interrupted anywhere resumes at the
first page not committed; a page read again is compared with the same latest
versions, so it gets the same identities, and the unique constraint stores
each once: no version is stored twice and none is skipped. When the plan is
done the source is due again after its poll interval.

Deletions: while a list whose every record is read each snapshot is read,
the checkpoint also holds the ids its pages held so far (`seen`); its last
page's transaction also stores a tombstone, following its latest version, for
each record stored before and not seen (`versions.VersionWriter.deletions`).
`gone` (kept between snapshots) lists the records deleted now, so that later
reads need not look them up; a return follows the tombstone like any change.

Limits, per Reporting key and shared by every source using it: the limiter
keeps 4 requests a second and the burst of 50 a minute (a wait longer than a
few seconds is left to the schedule, not slept), and takes each request from
the key's rolling daily window in the quota ledger before it is sent (2,000 +
licensed users per 24 h from the first request, `governor.budget_of`): when
it is spent the source shows a Warning with the time it frees up and resumes
then. The checkpoint counts each snapshot's requests per data type, from
which the governor projects the requests per day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import reset_queries, transaction
from django.utils import timezone

from collectors import lifecycle, quarantine
from collectors.choices import SourceState
from collectors.engine import versions
from collectors.engine.context import Abandon, Finish, RunContext
from collectors.knowbe4 import records
from collectors.knowbe4.records import settings_of
from collectors.knowbe4.reporting import NotFound, ReportingClient, child_path
from collectors.ratelimit import WaitLonger

CALLBACK = {"campaign_type": "callback"}
__all__ = ["SnapshotReader", "children", "plan", "settings_of", "wants_recipients"]


def plan(conf: dict, history_done: bool) -> list[dict]:
    """The tasks of one snapshot, in the order of the issue's §2."""
    tasks: list[dict] = []
    kinds = conf["data_types"]
    if "phishing" in kinds:
        tasks.append(_task("phishing_test", "/v1/phishing/security_tests"))
        # Every phishing endpoint serves callback tests only when asked.
        tasks.append(
            _task("callback_test", "/v1/phishing/security_tests", params=CALLBACK)
        )
    if "users" in kinds:
        tasks.append(_task("user", "/v1/users"))
    if "groups" in kinds:
        tasks.append(_task("group", "/v1/groups"))
    if "training" in kinds:
        tasks.append(_task("training_campaign", "/v1/training/campaigns"))
        tasks.append(_task("training_enrollment", "/v1/training/enrollments"))
    if "account" in kinds:
        tasks.append(_task("account", "/v1/account", mode="object"))
        params = {} if history_done else {"full": "true"}
        tasks.append(
            _task(
                "account_risk_score",
                "/v1/account/risk_score_history",
                mode="list",
                params=params,
            )
        )
    return tasks


def _task(data_type, path, *, mode="pages", params=None, parent=None) -> dict:
    return {
        "type": data_type,
        "path": path,
        "mode": mode,
        "params": params or {},
        "parent": parent,
    }


def wants_recipients(test: dict, now: datetime, days: int) -> bool:
    """Recipients are re-read for a running test, or one that closed within
    `days` (its start plus its duration in days), to save quota; a test that
    never started (an error) has none."""
    started = records.parse_time(test.get("started_at"))
    if started is None:
        return False
    if test.get("status") != "Closed":
        return True
    duration = test.get("duration")
    if not isinstance(duration, int) or isinstance(duration, bool):
        duration = 0
    return started + timedelta(days=duration + days) >= now


def children(task: dict, page_records: list, now: datetime, conf: dict) -> list[dict]:
    """The child tasks a parent page's records call for (a callback test's
    recipients are asked for with its `campaign_type` too)."""
    out = []
    recipients = records.TEST_RECIPIENTS.get(task["type"])
    for record in page_records:
        if not isinstance(record, dict):
            continue
        try:
            if recipients and wants_recipients(record, now, conf["recipients_days"]):
                path = child_path(
                    "/v1/phishing/security_tests/{}/recipients", record.get("pst_id")
                )
                out.append(_task(recipients, path, params=task["params"]))
            elif task["type"] == "group":
                gid = record.get("id")
                path = child_path("/v1/groups/{}/members", gid)
                out.append(_task("group_member", path, parent=str(gid)))
        except ValueError:
            continue  # the record itself is quarantined as poison
    return out


class SnapshotReader:
    """Reads a Reporting source's datasets, one committed request at a time."""

    name = "reporting"

    def read(self, ctx: RunContext, now: datetime) -> Finish:
        source = ctx.source
        conf = settings_of(source)
        state = dict(source.snapshot or {})
        if not state.get("tasks"):
            state.update(
                tasks=plan(conf, bool(state.get("history_done"))),
                i=0,
                page=1,
                found=[],
                started=now.isoformat(),
            )
        writer = versions.VersionWriter(source)
        with ReportingClient(source.base_url.url, ctx.secret) as client:
            while state["i"] < len(state["tasks"]):
                if ctx.out_of_budget():
                    ctx.result.more = True
                    return Finish(timezone.now(), {"snapshot": state})
                try:
                    state = self._step(ctx, client, writer, state, conf)
                except WaitLonger as wait:  # the burst limit: come back then
                    at = datetime.fromtimestamp(wait.at, UTC)
                    return Finish(at, {"snapshot": state})
        done = {k: state[k] for k in ("gone",) if k in state}
        done["requests"] = state.get("spent", {})
        done["history_done"] = state.get("history_done") or any(
            t["type"] == "account_risk_score" for t in state["tasks"]
        )
        done["last_snapshot"] = state.get("started")
        next_at = timezone.now() + timedelta(hours=conf["poll_hours"])
        return Finish(next_at, {"snapshot": done})

    def _step(self, ctx, client, writer, state: dict, conf: dict) -> dict:
        """One request of the current task, then its commit; the new state."""
        task = state["tasks"][state["i"]]
        # WaitLonger (burst) or BudgetSpent (the key's daily window) before
        # anything is sent; a request sent is counted, failed or not.
        ctx.limiter.acquire(longest=settings.COLLECTION_INLINE_RETRY_AFTER)
        # The ids this list's earlier pages held (None: not tracked, a
        # checkpoint from before tombstones), for its deletions.
        prior = state.get("seen") if state["page"] > 1 else []
        now = timezone.now()
        spent = dict(state.get("spent", {}))
        spent[task["type"]] = spent.get(task["type"], 0) + 1
        state = {**state, "spent": spent}
        ctx.result.requests += 1
        last, page_records = True, []
        try:
            if task["mode"] == "pages":
                page = client.get_page(
                    task["path"], state["page"], params=task["params"]
                )
                last, page_records = page.last, page.records
            elif task["mode"] == "object":
                page_records = [client.get_object(task["path"], task["params"])]
            else:
                page_records = client.get_list(task["path"], task["params"])
        except NotFound:
            if task["parent"] is None and task["type"] not in (
                *records.TEST_RECIPIENTS.values(),
                "group_member",
            ):
                raise
            page_records = []  # the test or group went away meanwhile
        finally:
            ctx.limiter.release()
        lifecycle.advance(
            ctx.source, SourceState.AUTHENTICATED, "First successful call to KnowBe4"
        )
        found = [*state.get("found", []), *children(task, page_records, now, conf)]
        if last:
            tasks = state["tasks"]
            tasks = [*tasks[: state["i"] + 1], *found, *tasks[state["i"] + 1 :]]
            state.update(tasks=tasks, i=state["i"] + 1, page=1, found=[])
        else:
            state.update(page=state["page"] + 1, found=found)
        self._commit(ctx, writer, task, page_records, state, prior, last)
        lifecycle.advance(ctx.source, SourceState.COLLECTING, "First page stored")
        return state

    def _commit(self, ctx, writer, task, page_records, state, prior, last) -> None:
        """The page's new versions (and, after a list's last page, its
        tombstones), its poison records and the checkpoint in one transaction
        (rolled back unless the lease is still ours)."""
        source = ctx.source
        received = timezone.now()
        found, rejected = writer.split(task["type"], page_records, task["parent"])
        with transaction.atomic():
            # The latest versions are read in the transaction that stores
            # what follows them: a page rolled back is read again against the
            # same ones, so it gets the same identities.
            writer.lock()
            new = writer.changes(task["type"], found)
            new += _deletions(writer, task, state, found, prior, last, rejected)
            stored = writer.insert(writer.rows(new, received, received))
            quarantine.add(source, received.date(), state.get("page", 1), rejected)
            if not lifecycle.commit_page(
                source,
                ctx.owner,
                cursor_day=source.cursor_day,
                cursor_page=source.cursor_page,
                last_complete_day=source.last_complete_day,
                dropped_fields=ctx.dropped_counts,
                now=received,
                snapshot=state,
            ):
                raise Abandon
        reset_queries()
        ctx.result.pages += 1
        ctx.result.stored += stored


def _deletions(
    writer, task, state, found, prior, last, rejected
) -> list[records.Version]:
    """Deletions, for a list whose every record is read each snapshot: keep
    the ids of its pages read so far in the checkpoint (`seen`); after its
    last page, a tombstone for each record stored before and not seen. A
    read with a poison record (`rejected`: no usable id, so which record it
    was is unknown) proves no absence: the checkpoint notes it (`unsure`)
    and that list gets no tombstones this time. The
    checkpoint's `gone` (data type -> record id -> tombstone identity) holds
    the records deleted now, so later complete reads need not look them up
    again; one that is read again leaves it (its return follows the
    tombstone, `records.follow`). `found`: every record the page held, changed
    or not. Updates `state`; returns the tombstones to store with the page."""
    kind = task["type"]
    if kind not in records.TOMBSTONED:
        return []
    gone = {k: dict(v) for k, v in state.get("gone", {}).items()}
    scope = gone.setdefault(kind, {})
    for v in found:
        scope.pop(v.record_id, None)  # back after a deletion, or never gone
    seen = None if prior is None else [*prior, *(v.record_id for v in found)]
    # Set on a list's first page (prior == []), carried over its later ones.
    unsure = bool(rejected) or (prior != [] and state.get("unsure", False))
    tombstones: list[records.Version] = []
    state.pop("seen", None)
    state.pop("unsure", None)
    if not last:
        if seen is not None:
            state["seen"] = seen
        if unsure:
            state["unsure"] = True
    elif seen is not None and not unsure:
        tombstones, deleted = writer.deletions(kind, task["parent"], set(seen), scope)
        scope.update(deleted)
    state["gone"] = {k: v for k, v in gone.items() if v}
    return tombstones
