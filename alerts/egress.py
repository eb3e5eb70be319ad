"""The one HTTP seam for outbound notifications and outputs (SSRF guard).

Every request this product sends to an operator-chosen URL (webhooks, Slack,
Teams, Sumo HTTP sources, Splunk HEC, NDJSON endpoints) goes through `post`:

- `check_destination` refuses anything but `https://` and any host that
  resolves to a loopback, private, link-local, reserved or multicast address;
- the connection resolves the host again *at connect time*, checks every
  address, connects to one it checked and verifies the peer it reached, so a
  DNS answer that changes between the check and the connect (DNS rebinding)
  cannot smuggle a request to an internal address;
- redirects are never followed, proxies from the environment are ignored, the
  connect and read timeouts are explicit and the response body is capped.

`settings.EGRESS_ALLOW_PRIVATE` (env `EGRESS_ALLOW_PRIVATE`) lifts the address
rule and allows `http://`: for a lab, the demo and the tests' local receivers.

Error texts name the host at most, never the path, query or credentials of a
URL: a Slack or Teams webhook URL *is* its secret.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)

USER_AGENT = "knowbe4sumo-egress/1.0"
CONNECT_TIMEOUT_CAP = 5.0
# Receivers answer with a status and a short text; more than this is dropped.
MAX_RESPONSE_BYTES = 64 * 1024


class EgressRefused(Exception):
    """The destination is not allowed. `str(exc)` is a reason a user may read;
    it never contains the URL's path, query or credentials."""


class EgressError(requests.RequestException):
    """A request failed (connection, TLS, timeout). The message is safe to
    show and store: requests' own messages quote the URL's path, these don't."""


class EgressTimeout(EgressError, requests.Timeout):
    """The destination did not connect or answer within the timeout."""


class EgressConnectionError(EgressError, requests.ConnectionError):
    """The destination could not be reached (DNS, refused, TLS, reset)."""


def _allow_private() -> bool:
    return bool(getattr(settings, "EGRESS_ALLOW_PRIVATE", False))


def _split(url: str):
    """(scheme, host, port) of a URL, or EgressRefused if it is not one."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
        raise EgressRefused("The URL is not valid.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressRefused("The URL is not valid.") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise EgressRefused("The URL must start with https:// and name a host.")
    return scheme, host, port or (443 if scheme == "https" else 80)


def address_refusal(address: str) -> str | None:
    """Why a resolved address may not be contacted, or None if it may.

    Anything that is not a global unicast address is refused: loopback,
    RFC 1918 and unique-local, link-local (cloud metadata at 169.254.169.254),
    carrier-grade NAT, reserved, unspecified and multicast. An IPv4 address
    mapped into IPv6 is judged as the IPv4 address it is.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_multicast:
        return "is a multicast address"
    if ip.is_private:
        return "is a private address"
    if not ip.is_global:
        return "is a reserved address"
    return None


def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo for a TCP connection (one place, so tests can vary DNS)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _check_addresses(host: str, addresses: list[str]) -> None:
    """Refuse the host if *any* of its addresses is refused: a name with one
    public and one private address must not reach the private one by chance."""
    if _allow_private():
        return
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise EgressRefused(
                f"Refused: {host} resolves to {address}, which {reason}. "
                "Destinations must be public addresses."
            )


def check_destination(url: str) -> None:
    """Raise EgressRefused unless `url` may be contacted.

    The scheme must be https (http too when EGRESS_ALLOW_PRIVATE is set); the
    host is resolved now and every address checked. `post` checks again when
    it connects, so passing this check does not pin an address.
    """
    scheme, host, port = _split(url)
    if scheme != "https" and not _allow_private():
        raise EgressRefused("The URL must start with https://.")
    try:
        infos = _resolve(host, port)
    except (OSError, UnicodeError):
        raise EgressRefused(f"The host {host} could not be resolved.") from None
    _check_addresses(host, [info[4][0] for info in infos])


def _guarded_socket(host: str, port: int, timeout, socket_options) -> socket.socket:
    """Resolve, check every address, connect to a checked one, verify the peer.

    This replaces urllib3's create_connection for egress connections, so the
    address connected to is always one this process has just checked.
    """
    infos = _resolve(host, port)
    _check_addresses(host, [info[4][0] for info in infos])
    error: OSError | None = None
    for family, socktype, proto, _name, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            sock.connect(sockaddr)
            _check_addresses(host, [sock.getpeername()[0]])
            return sock
        except OSError as exc:
            error = exc
            sock.close()
        except EgressRefused:
            sock.close()
            raise
    raise error or OSError(f"no address for {host}")


class _GuardedConnectionMixin:
    """Opens its socket through `_guarded_socket`; the rest is urllib3's."""

    def _new_conn(self) -> socket.socket:
        try:
            return _guarded_socket(
                self._dns_host, self.port, self.timeout, self.socket_options
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            message = f"Connection to {self.host} timed out."
            raise ConnectTimeoutError(self, message) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to connect: {exc}") from exc


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    """A requests adapter whose pools only open guarded connections."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


_local = threading.local()


def _session() -> requests.Session:
    """One session per thread: outputs reuse their connections batch to batch."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment
        adapter = _GuardedAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def post(
    url: str, *, data: bytes, headers: dict[str, str], timeout: float = 10.0
) -> requests.Response:
    """POST `data` to `url` through the guard and return the response.

    Any status comes back as a Response (a 3xx is returned, not followed).
    Raises EgressRefused for a forbidden destination (before or at connect
    time), EgressTimeout or EgressConnectionError when the request fails; the
    messages name the host only. The body read is capped at 64 KiB.
    """
    check_destination(url)
    _scheme, host, _port = _split(url)
    sent_headers = {"User-Agent": USER_AGENT, **headers}
    connect_timeout = min(timeout, CONNECT_TIMEOUT_CAP)
    try:
        response = _session().post(
            url,
            data=data,
            headers=sent_headers,
            timeout=(connect_timeout, timeout),
            allow_redirects=False,
            stream=True,
        )
        try:
            body = response.raw.read(MAX_RESPONSE_BYTES, decode_content=True)
        finally:
            response.close()
    except requests.Timeout:
        raise EgressTimeout(f"{host} did not answer within {timeout:g} s.") from None
    except requests.exceptions.SSLError:
        raise EgressConnectionError(
            f"The TLS connection to {host} failed (certificate or protocol)."
        ) from None
    except requests.RequestException:
        raise EgressConnectionError(f"{host} could not be reached.") from None
    response._content = body
    return response
