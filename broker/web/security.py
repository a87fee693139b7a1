"""Who is calling and what they may do (issue 5, "Security").

Three levels of access:

- **public** — ``/health``, ``/metrics``, ``/docs``, ``/openapi.json``, ``/login``, static
  files: nothing about patients.
- **read** — everything that shows patient data (worklist, journal, MPPS, outbox, timelines,
  the mapping preview). With an ``[http] token`` configured it needs the token; with none
  configured the console is read-only and reads need nothing (the default bind address is
  127.0.0.1).
- **write** — manual worklist entries, replay, outbox retry and discard. Needs a configured
  token, presented; with none configured every write is refused (403, naming the key).

The token travels as ``Authorization: Bearer <token>`` (API clients) or in the
:data:`COOKIE` the console's login form sets (HttpOnly, SameSite=Strict). A write carried by
the cookie must also come from the console's own pages (``Sec-Fetch-Site``/``Origin``), a
second guard against cross-site requests besides SameSite.

Who: the configured token may be written ``name:secret``; ``name`` is who the journal records
for every write. A token without a colon is named :data:`DEFAULT_NAME`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from broker.web.errors import ReadOnly, Unauthorized

COOKIE = "mwl_token"
DEFAULT_NAME = "operator"
ANONYMOUS = "anonymous"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_SITE = frozenset({"same-origin", "none"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the token's name when it presented the token."""

    name: str
    authenticated: bool


class TokenGate:
    """The configured ``[http] token`` and the checks against it (constant-time)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        head, colon, _ = token.partition(":")
        self.name = head if colon and head else DEFAULT_NAME

    @property
    def configured(self) -> bool:
        return bool(self._token)

    def matches(self, presented: str) -> bool:
        return self.configured and hmac.compare_digest(presented.encode(), self._token)

    def identify(self, request: Request) -> Principal:
        """The caller; :class:`Unauthorized` for a wrong bearer token (a wrong cookie is
        just no login: the console offers the form again)."""
        bearer = _bearer(request)
        if bearer is not None:
            if not self.matches(bearer):
                raise Unauthorized("the bearer token does not match [http] token")
            return Principal(self.name, True)
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and self.matches(cookie):
            return Principal(self.name, True)
        return Principal(ANONYMOUS, False)

    def identify_quietly(self, request: Request) -> Principal:
        """The caller, anonymous when the token presented is wrong (for rendering pages)."""
        try:
            return self.identify(request)
        except Unauthorized:
            return Principal(ANONYMOUS, False)

    def check_read(self, request: Request) -> Principal:
        principal = self.identify(request)
        if self.configured and not principal.authenticated:
            raise Unauthorized(
                "patient data needs the [http] token: send 'Authorization: Bearer <token>' "
                "or log in to the console"
            )
        return principal

    def check_write(self, request: Request) -> Principal:
        if not self.configured:
            raise ReadOnly(
                "the console is read-only: no [http] token is configured (set [http] token "
                "or MWL_BROKER_HTTP_TOKEN to allow writes)"
            )
        principal = self.check_read(request)
        if _bearer(request) is None and not _same_origin(request):
            raise ReadOnly("a write with the console's cookie must come from the console itself")
        return principal


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _same_origin(request: Request) -> bool:
    """A browser's own-site request: ``Sec-Fetch-Site`` says so, or ``Origin`` (else
    ``Referer``) names this host; a client sending neither is not a browser on another site."""
    if request.method in _SAFE_METHODS:
        return True
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in _SAME_SITE
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")
