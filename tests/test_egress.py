"""The egress seam (alerts/egress.py): the SSRF guard, no redirects, timeouts,
and errors that never quote a URL's secret parts."""

from __future__ import annotations

import socket

import pytest

from alerts import egress
from tests.receiver_support import running_receiver

SECRET_PATH = "/services/T000/B000/s3cr3tT0ken"


def fake_dns(monkeypatch, *answers: str) -> list[str]:
    """Answer each resolution with the next address (the last one repeats);
    returns the list of names asked, so a test can count resolutions."""
    asked: list[str] = []

    def resolve(host, port):
        asked.append(host)
        address = answers[min(len(asked), len(answers)) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(egress, "_resolve", resolve)
    return asked


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https:///no-host",
        "https://example.com:99999/",
        "https://exa mple.com/",
        "",
    ],
)
def test_it_refuses_urls_that_are_not_https_to_a_host(url):
    with pytest.raises(egress.EgressRefused):
        egress.check_destination(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.1.2.3/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.0.0.8/hook",
        "https://172.16.3.4/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://224.0.0.1/",
        "https://localhost/hook",
    ],
)
def test_it_refuses_loopback_private_link_local_and_reserved_hosts(url):
    with pytest.raises(egress.EgressRefused, match="Refused"):
        egress.check_destination(url)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254"])
def test_it_refuses_a_dns_name_that_resolves_to_an_internal_address(
    monkeypatch, address
):
    fake_dns(monkeypatch, address)
    with pytest.raises(egress.EgressRefused) as caught:
        egress.check_destination("https://hooks.example.com" + SECRET_PATH)
    assert address in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_it_accepts_a_public_https_destination(monkeypatch):
    fake_dns(monkeypatch, "93.184.215.14")
    egress.check_destination("https://hooks.example.com" + SECRET_PATH)


def test_it_refuses_loopback_at_connect_time_even_after_a_passed_check(
    monkeypatch,
):
    """The connection itself resolves and checks: even a request that skipped
    check_destination cannot reach a loopback address."""
    with running_receiver() as rx:
        port = rx.server.server_address[1]
        asked = fake_dns(monkeypatch, "127.0.0.1")
        with pytest.raises(egress.EgressRefused, match="127.0.0.1"):
            egress._session().post(
                f"http://rebind.example.com:{port}/hook", data=b"{}", timeout=5
            )
        assert asked == ["rebind.example.com"] and rx.requests == []


def test_it_refuses_a_name_whose_answer_changes_to_loopback_at_connect_time(
    monkeypatch,
):
    """DNS rebinding through post(): public when checked, loopback when
    connecting (the URL is judged as https, the receiver speaks http)."""
    with running_receiver() as rx:
        port = rx.server.server_address[1]
        asked = fake_dns(monkeypatch, "93.184.215.14", "127.0.0.1")
        monkeypatch.setattr(
            egress, "_split", lambda url: ("https", "rebind.example.com", port)
        )
        with pytest.raises(egress.EgressRefused, match="127.0.0.1"):
            egress.post(
                f"http://rebind.example.com:{port}/hook", data=b"{}", headers={}
            )
        assert len(asked) == 2 and rx.requests == []


def test_it_posts_to_a_local_receiver_when_private_addresses_are_allowed(settings):
    settings.EGRESS_ALLOW_PRIVATE = True
    with running_receiver() as rx:
        response = egress.post(
            rx.url("/hook"),
            data=b'{"a": 1}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200 and response.content == b"ok"
    (got,) = rx.requests
    assert got.path == "/hook" and got.body == b'{"a": 1}'
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("knowbe4sumo")


def test_it_refuses_the_same_local_receiver_by_default():
    with running_receiver() as rx:
        with pytest.raises(egress.EgressRefused):
            egress.post(rx.url("/hook"), data=b"{}", headers={})
        assert rx.requests == []


def test_it_never_follows_a_redirect(settings):
    settings.EGRESS_ALLOW_PRIVATE = True
    with running_receiver() as target, running_receiver() as rx:
        rx.respond = lambda req: (307, {"Location": target.url("/stolen")}, b"")
        response = egress.post(rx.url("/hook"), data=b"{}", headers={})
    assert response.status_code == 307
    assert len(rx.requests) == 1 and target.requests == []


def test_it_times_out_without_quoting_the_url(settings):
    """A server that accepts and never answers: the read timeout fires."""
    settings.EGRESS_ALLOW_PRIVATE = True
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(egress.EgressTimeout) as caught:
            egress.post(
                f"http://127.0.0.1:{port}{SECRET_PATH}?token=abc",
                data=b"{}",
                headers={},
                timeout=0.5,
            )
    assert "s3cr3t" not in str(caught.value) and "token" not in str(caught.value)


def test_it_reports_a_refused_connection_without_quoting_the_url(settings):
    settings.EGRESS_ALLOW_PRIVATE = True
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(egress.EgressConnectionError) as caught:
        egress.post(f"http://127.0.0.1:{port}{SECRET_PATH}", data=b"", headers={})
    assert "s3cr3t" not in str(caught.value)
    assert isinstance(caught.value, egress.requests.ConnectionError)
