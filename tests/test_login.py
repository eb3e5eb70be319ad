"""Sign-in: required everywhere except the login page; admin for staff."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.cast import make_field

pytestmark = pytest.mark.django_db


def app_urls(collector, source, field) -> list[str]:
    """Every configuration page, with real ids."""
    c, s, f = collector.pk, source.pk, field.pk
    return [
        reverse("collection"),
        reverse("collector-add"),
        reverse("collector-edit", args=[c]),
        reverse("collector-delete", args=[c]),
        reverse("source-types", args=[c]),
        reverse("source-add", args=[c]),
        reverse("source-edit", args=[s]),
        reverse("source-delete", args=[s]),
        reverse("fields"),
        reverse("field-add"),
        reverse("field-enable", args=[f]),
        reverse("field-disable", args=[f]),
        reverse("field-delete", args=[f]),
    ]


def test_it_shows_the_login_page(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="username"' in html
    assert 'type="password"' in html
    assert "csrfmiddlewaretoken" in html


def test_it_redirects_anonymous_users_to_login(client, source):
    field = make_field("dept")
    for url in app_urls(source.collector, source, field):
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("login")), url
    source.refresh_from_db()
    assert source.state == "pending"
    field.refresh_from_db()
    assert field.enabled


def test_it_signs_in_to_the_collection_page(client, admin_user):
    response = client.post(
        reverse("login"),
        {"username": "alice", "password": "correct horse battery staple"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("collection")
    assert "Sign out" in response.content.decode()


def test_it_refuses_a_wrong_password(client, admin_user):
    response = client.post(reverse("login"), {"username": "alice", "password": "no"})
    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode()


def test_it_signs_out_with_a_post(admin_client):
    response = admin_client.post(reverse("logout"))
    assert response.status_code == 302
    assert admin_client.get(reverse("collection")).status_code == 302


def test_it_keeps_admin_for_staff(role_client):
    """Even the widest role, Collector manager, does not open /admin/."""
    client = role_client("Collector manager")
    assert client.get(reverse("collection")).status_code == 200
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_it_requires_sign_in_on_every_app_url(client, source):
    """Every URL of the app, the other helpers' included, sends anonymous
    visitors to the login page."""
    from collectors import urls
    from tests.test_key_never_shown import app_patterns, kwarg_sets

    checked = 0
    for pattern in app_patterns(urls.urlpatterns):
        for kwargs in kwarg_sets(pattern, {source.pk}):
            url = reverse(pattern.name, kwargs=kwargs)
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("login")), url
            checked += 1
    assert checked >= 13
