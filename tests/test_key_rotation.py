"""Keys at rest: `manage.py rotate_keys` and the system checks of the keys."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.checks import Error, Warning, run_checks
from django.core.management import CommandError, call_command

from collectors import checks
from collectors.models import Source
from tests.cast import make_collector, make_source

pytestmark = pytest.mark.django_db

K1 = Fernet.generate_key().decode()
K2 = Fernet.generate_key().decode()


def rotate(**kw) -> str:
    out = StringIO()
    call_command("rotate_keys", stdout=out, **kw)
    return out.getvalue()


@pytest.fixture
def sources_under_k1(settings):
    """Seven sources whose keys were encrypted with K1 alone."""
    settings.FIELD_ENCRYPTION_KEYS = [K1]
    collector = make_collector()
    return {
        make_source(collector, f"S{n}", api_key=f"api-key-number-{n:04d}").pk: (
            f"api-key-number-{n:04d}"
        )
        for n in range(7)
    }


def readable_keys() -> dict[int, str]:
    return {s.pk: s.get_api_key() for s in Source.objects.all()}


def test_it_rotates_so_that_the_new_key_alone_decrypts_every_key(
    settings, sources_under_k1
):
    settings.FIELD_ENCRYPTION_KEYS = [K2, K1]
    before = dict(Source.objects.values_list("pk", "updated"))
    assert rotate(batch_size=3) == "7 rows re-encrypted.\n"
    settings.FIELD_ENCRYPTION_KEYS = [K2]
    assert readable_keys() == sources_under_k1
    # Rotation is not an edit: no new config version, no `updated` bump.
    assert dict(Source.objects.values_list("pk", "updated")) == before
    assert set(Source.objects.values_list("config_version", flat=True)) == {1}


def test_it_changes_nothing_when_run_again(settings, sources_under_k1):
    settings.FIELD_ENCRYPTION_KEYS = [K2, K1]
    rotate()
    tokens = dict(Source.objects.values_list("pk", "api_key_encrypted"))
    assert rotate() == "0 rows re-encrypted.\n"
    assert dict(Source.objects.values_list("pk", "api_key_encrypted")) == tokens


def test_it_leaves_a_key_no_configured_key_reads_and_says_so(
    settings, sources_under_k1
):
    settings.FIELD_ENCRYPTION_KEYS = [K2]
    with pytest.raises(CommandError) as info:
        rotate()
    assert "7 stored secrets could not be decrypted" in str(info.value)
    settings.FIELD_ENCRYPTION_KEYS = [K1]
    assert readable_keys() == sources_under_k1


def test_it_refuses_a_bad_batch_size_or_key_list(settings, sources_under_k1):
    with pytest.raises(CommandError, match="at least 1"):
        rotate(batch_size=0)
    settings.FIELD_ENCRYPTION_KEYS = [K2, "not-a-key"]
    with pytest.raises(CommandError, match="entry 2 is not a valid Fernet key"):
        rotate()


def test_it_does_not_overwrite_a_key_saved_during_rotation(
    settings, sources_under_k1, monkeypatch
):
    """The write is conditional on the token read: a user's new key wins."""
    from collectors import crypto

    settings.FIELD_ENCRYPTION_KEYS = [K2, K1]
    first = Source.objects.order_by("pk").first()
    real_rotate = crypto.rotate

    def rotate_while_a_user_saves(token):
        if token == Source.objects.get(pk=first.pk).api_key_encrypted:
            first.set_api_key("saved-by-a-user-meanwhile")
            first.save()
        return real_rotate(token)

    monkeypatch.setattr(crypto, "rotate", rotate_while_a_user_saves)
    assert rotate() == "6 rows re-encrypted.\n"
    first.refresh_from_db()
    assert first.get_api_key() == "saved-by-a-user-meanwhile"


@pytest.mark.parametrize(
    ("keys", "positions"),
    [
        (["short"], [1]),
        ([K1, "x" * 44], [2]),
        ([K1, "", K2, K1[:-2]], [2, 4]),
    ],
)
def test_it_fails_the_check_on_a_bad_key_list(settings, keys, positions):
    settings.FIELD_ENCRYPTION_KEYS = keys
    errors = [e for e in run_checks() if e.id == "collectors.E002"]
    assert [type(e) for e in errors] == [Error] * len(positions)
    for error, position in zip(errors, positions, strict=True):
        assert f"entry {position} of {len(keys)} is not a valid" in error.msg
        for key in keys:
            if key:
                assert key not in error.msg + error.hint


def test_it_fails_the_check_on_an_empty_key_list(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    assert [e.id for e in checks.check_encryption_keys()] == ["collectors.E001"]


def test_it_passes_the_checks_on_good_keys(settings, sources_under_k1):
    settings.FIELD_ENCRYPTION_KEYS = [K2, K1]
    ids = {e.id for e in run_checks(databases=["default"])}
    assert not ids & {"collectors.E001", "collectors.E002", "collectors.W001"}


def test_it_warns_when_stored_keys_cannot_be_decrypted(settings, sources_under_k1):
    settings.FIELD_ENCRYPTION_KEYS = [K2]
    warnings = [
        e for e in run_checks(databases=["default"]) if e.id == "collectors.W001"
    ]
    assert len(warnings) == 1 and isinstance(warnings[0], Warning)
    assert (
        "7 sampled stored secrets (API keys, connection URLs) cannot be decrypted"
        in warnings[0].msg
    )
    assert "rotate_keys" in warnings[0].hint
    # Without a database (plain `check`) the warning is not computed.
    assert not [e for e in run_checks() if e.id == "collectors.W001"]


def test_it_samples_the_stored_keys(settings, sources_under_k1, monkeypatch):
    monkeypatch.setattr(checks, "SAMPLE_SIZE", 2)
    settings.FIELD_ENCRYPTION_KEYS = [K2]
    (warning,) = checks.check_stored_keys_readable(databases=["default"])
    assert "4 sampled stored secrets" in warning.msg


def test_it_rotates_notification_connection_urls_and_secrets(settings):
    from alerts.models import Connection, ConnectionKind
    from tests.alerts_support import WEBHOOK_SECRET, make_connection

    settings.FIELD_ENCRYPTION_KEYS = [K1]
    url = "https://hooks.example.org/services/T000/B000/XXXXXXXX"
    make_connection(ConnectionKind.WEBHOOK, url=url)
    make_connection(ConnectionKind.EMAIL)  # nothing encrypted: left alone
    settings.FIELD_ENCRYPTION_KEYS = [K2, K1]
    assert rotate() == "2 rows re-encrypted.\n"  # the URL and the secret
    settings.FIELD_ENCRYPTION_KEYS = [K2]
    webhook = Connection.objects.get(kind=ConnectionKind.WEBHOOK)
    assert (webhook.get_url(), webhook.get_secret()) == (url, WEBHOOK_SECRET)
