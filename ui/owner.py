"""Who is this browser? A per-browser owner id for live runs and the CPU budget, never put in a URL.

A live run's link is shared with a class, so a token in the URL cannot say who may stop the run.
Streamlit 1.67 offers the app no way to *set* a cookie, but it reads the cookies of the websocket
handshake (``st.context.cookies``), and with its default XSRF protection every browser already holds
one secret of its own: the ``_streamlit_xsrf`` cookie, set by the server on the first page load,
sent by every tab of that browser profile and never part of a link. Its value is re-masked on every
response (``2|mask|masked_token|timestamp``), so the owner id is a hash of the *unmasked* token:
the same for a reloaded tab, a reconnected websocket and a new tab of the same browser, different
for another browser, another profile or a private window. The hash is one-way, so the id the
server keeps reveals nothing that could be replayed.

Where there is no such cookie (``server.enableXsrfProtection=false``, or AppTest), the owner is a
random token kept in the session's state: it survives a websocket reconnect (the session stays)
but not a reload; the page then says so.
"""

from __future__ import annotations

import binascii
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import streamlit as st

__all__ = ["XSRF_COOKIE", "browser_owner", "owner_from_cookies", "owner_is_per_browser"]

XSRF_COOKIE = "_streamlit_xsrf"
_KEY = "_etr_owner"
_SALT = b"etr live-run owner\x00"


def _xsrf_token(value: Any) -> bytes | None:
    """The raw token bytes of an XSRF cookie value (version 2 masked, or version 1 hex), else None."""
    if not isinstance(value, str):
        return None
    text = value.strip("\"' ")
    try:
        if text.startswith("2|"):
            _, mask_hex, masked_hex, _stamp = text.split("|")
            mask, masked = binascii.a2b_hex(mask_hex), binascii.a2b_hex(masked_hex)
            if len(mask) != 4 or not masked:
                return None
            return bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
        token = binascii.a2b_hex(text)
    except (ValueError, binascii.Error):
        return None
    return token or None


def owner_from_cookies(cookies: Mapping[str, Any]) -> str | None:
    """The owner id of the browser that sent ``cookies`` (``"b-"`` + 24 hex digits), or None when
    they hold no readable XSRF cookie. Pure function: the same token gives the same id whatever its
    mask."""
    try:
        token = _xsrf_token(cookies.get(XSRF_COOKIE))
    except Exception:  # a cookie mapping that cannot be read is no cookie
        return None
    if token is None:
        return None
    return "b-" + hashlib.sha256(_SALT + token).hexdigest()[:24]


def browser_owner() -> str:
    """This browser's owner id (see the module docstring); fixed for the session once computed."""
    owner = st.session_state.get(_KEY)
    if isinstance(owner, str):
        return owner
    try:
        owner = owner_from_cookies(st.context.cookies)
    except Exception:  # no client context (bare script run)
        owner = None
    owner = owner or "s-" + secrets.token_hex(12)
    st.session_state[_KEY] = owner
    return owner


def owner_is_per_browser() -> bool:
    """Whether this session's owner id comes from the browser's cookie (else: this session only)."""
    return browser_owner().startswith("b-")
