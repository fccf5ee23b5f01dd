"""Who may use a service (backend, gallery, gradio app): loopback or a token (Bearer header, cookie or ``?token=``),
and keeping the token out of the access log."""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse

from da3core.errors import UserError


class ExposureError(UserError, ValueError):
    """A service asked to listen on an address other machines reach, with no token to guard it."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None, service: str) -> None:
    """Refuse to serve ``service`` off loopback unless a token guards every request."""
    if not is_loopback(host) and not token:
        raise ExposureError(
            f"refusing to serve the {service} on {host} without a token: pass --token (clients then send "
            "'Authorization: Bearer <token>') or bind 127.0.0.1"
        )


class TokenGate:
    """ASGI middleware: every route except static assets needs the token (Bearer header, cookie or ?token=).

    A valid ``?token=`` sets an HttpOnly cookie so a browser can then use the dashboard and gallery links.
    """

    def __init__(self, app: Any, token: str, open_prefixes: tuple[str, ...] = ()) -> None:
        # open_prefixes: the bundled viewer script and styles, static and nothing private
        self.app, self.token, self.open_prefixes = app, token, open_prefixes

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.open_prefixes):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        cookie = _cookie(headers.get("cookie", ""), "da3_token")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if self._valid(bearer) or (cookie is not None and self._valid(cookie.value)):
            return await self.app(scope, receive, send)
        if not self._valid(query):
            response = JSONResponse(
                {"detail": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            return await response(scope, receive, send)

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                value = f"da3_token={self.token}; HttpOnly; SameSite=Strict; Path=/"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", value.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie(header: str, name: str) -> Any:
    """The named morsel of a Cookie header, or None (a malformed header counts as no cookie)."""
    try:
        return SimpleCookie(header).get(name)
    except CookieError:
        return None


class RedactToken(logging.Filter):
    """Keep a ``?token=`` (a browser's first visit) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = tuple(
            re.sub(r"token=[^&\s]*", "token=***", a) if isinstance(a, str) else a for a in record.args or ()
        )
        return True
