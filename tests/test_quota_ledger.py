"""The quota ledger: each request taken from its key's daily window by one
atomic UPDATE before it is sent, so workers sharing a key never send one past
the budget; the window's reset rule (UTC midnight for the User Event API, 24 h
from the first request for the Reporting API); the two APIs kept apart."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from collectors import days, ledger, ratelimit
from collectors.models import ApiKeyUsage
from collectors.ratelimit import DatabaseBackend, Limiter

T0 = datetime(2026, 3, 10, 18, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_it_counts_each_request_and_refuses_past_the_budget():
    for _ in range(3):
        assert ledger.take("events", "k1", 3, T0)
    assert not ledger.take("events", "k1", 3, T0)
    window = ledger.window("events", "k1", T0)
    assert (window.used, window.opened_at) == (3, T0)
    assert window.resets_at == datetime(2026, 3, 11, tzinfo=UTC)
    # No known budget: counted, never refused.
    assert ledger.take("events", "k1", None, T0)
    assert ledger.window("events", "k1", T0).used == 4


@pytest.mark.django_db
def test_it_resets_the_user_event_window_at_utc_midnight():
    ledger.take("events", "k2", 2, T0)
    ledger.take("events", "k2", 2, T0)
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    assert not ledger.take("events", "k2", 2, midnight - timedelta(seconds=1))
    assert ledger.take("events", "k2", 2, midnight)
    window = ledger.window("events", "k2", midnight)
    assert (window.used, window.opened_at) == (1, midnight)
    assert window.resets_at == midnight + timedelta(days=1)


@pytest.mark.django_db
def test_it_rolls_the_reporting_window_24_hours_from_the_first_request():
    assert ledger.take("reporting", "k3", 2, T0)
    later = T0 + timedelta(hours=20)  # past UTC midnight: still the same window
    assert ledger.take("reporting", "k3", 2, later)
    assert not ledger.take("reporting", "k3", 2, later)
    window = ledger.window("reporting", "k3", later)
    assert window.resets_at == T0 + timedelta(hours=24)
    assert days.quota_resets_at(T0, "reporting") == window.resets_at
    assert not ledger.take("reporting", "k3", 2, T0 + timedelta(hours=24, seconds=-1))
    reopened = T0 + timedelta(hours=25)
    assert ledger.take("reporting", "k3", 2, reopened)
    assert ledger.window("reporting", "k3", reopened).resets_at == reopened + (
        timedelta(hours=24)
    )


@pytest.mark.django_db
def test_it_keeps_the_two_apis_of_one_fingerprint_apart():
    assert ledger.take("events", "same", 1, T0)
    assert not ledger.take("events", "same", 1, T0)
    assert ledger.take("reporting", "same", 1, T0)
    assert ApiKeyUsage.objects.filter(key_hash="same").count() == 2


@pytest.mark.django_db
def test_it_learns_the_budget_from_the_window_of_a_limit_exceeded(time_machine):
    time_machine.move_to(T0, tick=False)
    for _ in range(31):
        ledger.take("events", "k4", None)
    ledger.learn("events", "k4")
    assert ledger.learned_budget("events", "k4") == 30
    assert ledger.learned_budget("reporting", "k4") is None


@pytest.fixture
def lined_up(monkeypatch):
    """Arms a hook that stops two workers right before the UPDATE and
    releases them together: the exact point where a check-then-send would
    let both through."""

    def arm() -> None:
        barrier = threading.Barrier(2, timeout=20)
        monkeypatch.setattr(ledger, "before_take", lambda api, key: barrier.wait())

    return arm


def race(worker, count: int = 2) -> list:
    """Run `worker` on `count` threads (each with its own connection)."""
    from django.db import connection

    results: list = []
    lock = threading.Lock()

    def run():
        try:
            outcome = worker()
        except Exception as exc:  # recorded, asserted by the test
            outcome = exc
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == count
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("api", ["events", "reporting"])
def test_it_gives_the_last_request_of_a_budget_to_one_of_two_workers(api, lined_up):
    for _ in range(9):
        assert ledger.take(api, "race", 10, T0)
    lined_up()
    results = race(lambda: ledger.take(api, "race", 10, T0))
    assert sorted(results) == [False, True]
    assert ledger.window(api, "race", T0).used == 10


@pytest.mark.django_db(transaction=True)
def test_it_lets_only_one_of_two_limiters_send_the_last_request(lined_up, settings):
    """As two workers' runs do: the limiter takes the request from the budget
    before anything is sent; the loser gets BudgetSpent and sends nothing."""
    settings.REDIS_URL = ""
    for _ in range(4):
        assert ledger.take("events", "race-lim", 5)
    sent = []

    def worker():
        Limiter("race-lim", DatabaseBackend(), budget=5).acquire()
        sent.append(1)  # "the request"
        return "sent"

    lined_up()
    results = race(worker)
    assert results.count("sent") == 1 and len(sent) == 1
    assert [type(r) for r in results if r != "sent"] == [ratelimit.BudgetSpent]
    assert ledger.used("events", "race-lim") == 5


@pytest.mark.django_db(transaction=True)
def test_it_opens_one_window_when_two_workers_find_the_old_one_reset(lined_up):
    ApiKeyUsage.objects.create(
        api="events",
        key_hash="race-reset",
        used=7,
        window_opened_at=T0 - timedelta(days=1),
        window_resets_at=T0 - timedelta(hours=6),
    )
    lined_up()
    results = race(lambda: ledger.take("events", "race-reset", 7, T0))
    assert results == [True, True]
    window = ledger.window("events", "race-reset", T0)
    assert (window.used, window.opened_at) == (2, T0)


@pytest.mark.django_db
def test_it_counts_a_new_keys_request_when_another_worker_made_its_row_meanwhile(
    monkeypatch,
):
    """The first UPDATE finds no row; before this worker looks, another has
    made the row and counted its own request. This request must still be
    counted and sent: a row that exists does not mean a spent budget."""
    real = ledger._count

    def count(api, key_hash, budget, now, lined_up=False, count=1):
        changed = real(api, key_hash, budget, now, lined_up, count)
        if lined_up:
            assert not changed  # no row yet
            assert real(api, key_hash, budget, now) is False
            ledger._row(api, key_hash)  # the other worker's first request
            assert real(api, key_hash, budget, now)
        return changed

    monkeypatch.setattr(ledger, "_count", count)
    assert ledger.take("events", "fresh", None, T0)
    assert ledger.take("reporting", "fresh-2", 5, T0)
    assert ledger.window("events", "fresh", T0).used == 2
    assert ledger.window("reporting", "fresh-2", T0).used == 2


@pytest.mark.django_db
def test_it_takes_requests_a_block_at_a_time_and_gives_back_what_was_not_sent(
    django_assert_num_queries,
):
    assert ledger.take("events", "blk", None, T0)  # the key's row exists
    reservation = ledger.Reservation("events", "blk", None)
    with transaction.atomic():
        with django_assert_num_queries(2):  # the block's UPDATE, its window
            assert all(reservation.take(T0, block=10) for _ in range(7))
        with django_assert_num_queries(1):  # the three not sent, given back
            reservation.settle()
    window = ledger.window("events", "blk", T0)
    assert (window.used, window.opened_at) == (8, T0)
    reservation.settle()  # nothing held: nothing given back twice
    assert ledger.window("events", "blk", T0).used == 8


@pytest.mark.django_db
def test_it_takes_one_by_one_what_is_left_of_a_known_budget_smaller_than_a_block():
    for _ in range(6):
        ledger.take("events", "tight", 10, T0)
    reservation = ledger.Reservation("events", "tight", 10)
    with transaction.atomic():
        assert [reservation.take(T0, block=5) for _ in range(5)] == [True] * 4 + [False]
        reservation.settle()
    assert ledger.window("events", "tight", T0).used == 10
    # With room for a block, a block is taken, and only the requests sent stay.
    roomy = ledger.Reservation("events", "roomy", 20)
    with transaction.atomic():
        assert all(roomy.take(T0, block=5) for _ in range(3))
        roomy.settle()
    assert ledger.window("events", "roomy", T0).used == 3


@pytest.mark.django_db
def test_it_opens_the_new_window_for_the_requests_a_block_held_past_its_reset():
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    before = midnight - timedelta(seconds=1)
    reservation = ledger.Reservation("events", "late", None)
    with transaction.atomic():
        assert reservation.take(before, block=10) and reservation.take(before)
        assert reservation.take(midnight, block=10)  # old block back, a new one
        assert reservation.take(midnight)
        reservation.settle()
    window = ledger.window("events", "late", midnight)
    assert (window.used, window.opened_at) == (2, midnight)


@pytest.mark.django_db
def test_it_keeps_nothing_of_a_block_whose_transaction_rolled_back():
    reservation = ledger.Reservation("events", "undone", None)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert reservation.take(T0, block=10) and reservation.take(T0)
        raise RuntimeError
    reservation.forget()
    assert ledger.window("events", "undone", T0).used == 0
    # The caller counts again the two it sent, in one UPDATE.
    assert ledger.take("events", "undone", None, T0, count=2)
    assert ledger.window("events", "undone", T0).used == 2
