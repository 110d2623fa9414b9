"""better-auth session tokens: signing, verifying, and reading them off a request.

chatstore does not run better-auth; it validates better-auth's sessions in its
own database (sql/auth.sql). This module is the pure half of that: it turns an
``Authorization`` header and the request's cookies into a candidate session
token, or ``None``. Whether the token names a live session is the database's
call (``session_user`` in sql/auth.sql).

Formats followed (better-auth 1.4.x and the better-call it ships with):

* Signed value -- better-call ``packages/better-call/src/crypto.ts``
  (``signCookieValue``/``makeSignature``)::

      "<token>.<signature>"   signature = base64(HMAC-SHA256(secret, token))

  standard base64 alphabet *with* padding ("always 44 characters long", the
  source says, ending in ``=``), then the whole string goes through
  ``encodeURIComponent`` before it is put in ``Set-Cookie``.
* Verification -- better-call ``packages/better-call/src/context.ts``
  (``getSignedCookie``): the cookie parser percent-decodes the value, the
  value is split at the *last* ``.`` (a token must be at least one
  character), a signature that is not 44 characters ending in ``=`` is
  rejected before any HMAC is computed, then the HMAC is checked.
* Tokens and ids -- better-auth ``createSession`` stores
  ``token: generateId(32)``; ``generateId`` draws from ``a-z A-Z 0-9``
  (``@better-auth/utils/random``), 32 characters by default.
* Bearer -- better-auth ``packages/better-auth/src/plugins/bearer/index.ts``
  accepts either the raw token or the signed (URL-encoded) value that it
  hands out in the ``set-auth-token`` response header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, unquote

__all__ = [
    "COOKIE_NAMES",
    "DEFAULT_SESSION_TTL",
    "MAX_CREDENTIAL_LENGTH",
    "SessionUser",
    "cookie_value",
    "new_id",
    "new_token",
    "sign_token",
    "token_from_request",
    "verify_signed",
]

# better-auth's default cookie prefix ("better-auth"); it adds "__Secure-" when
# its baseURL is https or NODE_ENV is production (createCookieGetter in
# packages/better-auth/src/cookies/index.ts). A server configured with another
# advanced.cookiePrefix is not recognised here.
COOKIE_NAMES = ("better-auth.session_token", "__Secure-better-auth.session_token")
# Lookup order: the secure name wins when both are sent (see _cookie).
_COOKIE_PREFERENCE = ("__Secure-better-auth.session_token", "better-auth.session_token")

# better-auth's default session lifetime (options.session.expiresIn: 7 days).
DEFAULT_SESSION_TTL = timedelta(days=7)

# A raw token is 32 characters and a signed one 32 + 1 + 44 (more once
# URL-encoded); anything near a kilobyte is garbage, refused before any work.
MAX_CREDENTIAL_LENGTH = 1024

# base64 of a 32-byte HMAC-SHA256: 43 characters plus one "=" of padding.
_SIGNATURE_LENGTH = 44

# What encodeURIComponent leaves alone besides ASCII letters and digits
# (ECMA-262 uriUnreserved minus the alphanumerics). urllib's quote() never
# encodes letters, digits and "_.-~", so these extra characters make it
# byte-for-byte encodeURIComponent for the ASCII we produce.
_URI_COMPONENT_SAFE = "-_.!~*'()"

_ALPHANUMERIC = string.ascii_letters + string.digits
_ID_LENGTH = 32


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The caller behind a valid session: the ``session_user`` row, minus SQL.

    ``expires_at`` is timezone-aware (UTC): sql/auth.sql normalises both
    ``timestamp`` and ``timestamptz`` columns to ``timestamptz``.
    ``session_id`` is the session row's id, the name revocations use.
    """

    session_id: str
    user_id: str
    expires_at: datetime


def new_token() -> str:
    """A fresh session token, shaped like better-auth's ``generateId(32)``."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(_ID_LENGTH))


def new_id() -> str:
    """A fresh user/session id, like better-auth's default ``generateId()``."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(_ID_LENGTH))


def _signature(token: str, secret: str) -> str:
    # better-call encodes both key and message with TextEncoder, i.e. UTF-8.
    digest = hmac.new(secret.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_token(token: str, secret: str) -> str:
    """``"<token>.<base64 signature>"``, not yet URL-encoded (better-call's
    ``signCookieValue`` before its ``encodeURIComponent`` step)."""
    if not secret:
        raise ValueError("a non-empty secret is required to sign a session token")
    return f"{token}.{_signature(token, secret)}"


def cookie_value(token: str, secret: str) -> str:
    """The cookie value better-auth sets: ``encodeURIComponent(sign_token(...))``.

    Also what the bearer plugin returns in ``set-auth-token``.
    """
    return quote(sign_token(token, secret), safe=_URI_COMPONENT_SAFE)


def _is_visible_ascii(value: str) -> bool:
    # Tokens are alphanumeric and signatures base64: every legitimate
    # character is visible ASCII (0x21-0x7E). Whitespace, control characters
    # and anything non-ASCII can only come from a forged or mangled value.
    return all("!" <= ch <= "~" for ch in value)


def _bounded(value: str) -> bool:
    return 0 < len(value) <= MAX_CREDENTIAL_LENGTH and _is_visible_ascii(value)


def verify_signed(value: str, secret: str) -> str | None:
    """The token inside a signed value, or ``None`` if it does not verify.

    Accepts the URL-encoded cookie form and the plain ``token.signature``
    form alike: percent-decoding a plain value changes nothing, because
    neither tokens nor base64 contain ``%``.
    """
    if not secret or not value or len(value) > MAX_CREDENTIAL_LENGTH:
        return None
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        return None
    if not _bounded(decoded):
        return None
    # Split at the LAST dot, as better-call does: the signature never
    # contains one, so whatever precedes it is the token, dots included.
    dot = decoded.rfind(".")
    if dot < 1:
        return None
    token, signature = decoded[:dot], decoded[dot + 1 :]
    # The cheap shape check better-call makes before any HMAC.
    if len(signature) != _SIGNATURE_LENGTH or not signature.endswith("="):
        return None
    expected = _signature(token, secret)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        return None
    return token


def _bearer_credential(authorization: str) -> str | None:
    """The credential of an ``Authorization: Bearer <x>`` header, else ``None``."""
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()


def _cookie(cookies: Mapping[str, str]) -> str | None:
    """The session cookie's value; the ``__Secure-`` one wins when both are set.

    The preferred cookie, when present, is the only one judged: falling back
    to the unprefixed name after a failed ``__Secure-`` cookie would let a
    cookie planted over plain http override the secure one.
    """
    for name in _COOKIE_PREFERENCE:
        value = cookies.get(name)
        if value is not None:
            # A cookie value may arrive as an RFC 6265 quoted string.
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def token_from_request(
    authorization: str | None,
    cookies: Mapping[str, str],
    secret: str | None,
) -> str | None:
    """The raw session token a request presents, or ``None``.

    Rules, in order:

    1. ``Authorization: Bearer <x>`` (scheme case-insensitive) is the
       credential whenever it is present; an invalid one is a failure, never
       a reason to fall back to a cookie (the caller asked to be judged by it).

       * ``x`` without a ``.`` is a raw token: better-auth's tokens are 32
         alphanumerics, so they never contain one. Whether it names a live
         session is for the database to say.
       * ``x`` with a ``.`` is the signed form (better-auth's bearer plugin
         hands it out URL-encoded); it must verify against ``secret``, and
         without a configured secret it cannot. It is never retried as a raw
         token: no raw token has a dot, so that lookup could only fail.

    2. Otherwise the session cookie (``__Secure-`` name preferred) must carry
       a valid signature; an unsigned or forged cookie is ``None``.

    Non-Bearer ``Authorization`` schemes (``Basic`` for a proxy, say) are not
    chatstore credentials and are ignored. Empty, oversized (over
    ``MAX_CREDENTIAL_LENGTH``), whitespace-bearing and non-printable values
    are rejected before any HMAC or query.
    """
    if authorization is not None:
        if len(authorization) > MAX_CREDENTIAL_LENGTH + len("Bearer "):
            return None
        credential = _bearer_credential(authorization)
        if credential is not None:
            if not _bounded(credential):
                return None
            if "." in credential:
                return verify_signed(credential, secret) if secret else None
            return credential

    value = _cookie(cookies)
    if value is None or not secret:
        return None
    return verify_signed(value, secret)
