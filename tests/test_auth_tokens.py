"""better-auth token handling (chatstore.auth): pure functions, no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from collections.abc import Callable

import pytest

from chatstore.auth import (
    COOKIE_NAMES,
    MAX_CREDENTIAL_LENGTH,
    cookie_value,
    new_id,
    new_token,
    sign_token,
    token_from_request,
    verify_signed,
)

SECRET = "better-auth-secret-for-tests-0123456789"
TOKEN = "Yq3vN0aZbC1dE2fG3hI4jK5lM6nO7pQ8"  # 32 alphanumerics, like generateId(32)
PLAIN, SECURE = COOKIE_NAMES


def test_cookie_value_matches_published_vector() -> None:
    # better-call's crypto.ts descends from Hono's signed cookies; this vector
    # is asserted by that family's test suites (Hono's cookie helper tests and
    # ports of them): setSignedCookie("delicious_cookie", "macha",
    # "secret chocolate chips") -> "macha.diubJPY8...%2FN2HaA%3D".
    assert cookie_value("macha", "secret chocolate chips") == (
        "macha.diubJPY8O7hI1pLa42QSfkPiyDWQ0I4DnlACH%2FN2HaA%3D"
    )
    assert cookie_value("banana", "secret chocolate chips") == (
        "banana.hSo6gB7YT2db0WBiEAakEmh7dtwEL0DSp76G23WvHuQ%3D"
    )


def test_published_cookie_with_literal_plus_verifies() -> None:
    # From the same suites: a cookie whose "+" was left unencoded. Percent-
    # decoding must keep "+" as "+" (decodeURIComponent, not form decoding).
    value = "lots-of-money.UO6vMygDM6NCDU4LdvBnzdVb2Xcdj+h+ZTnmS8X7iH8%3D"
    assert verify_signed(value, "secret lucky charm") == "lots-of-money"


def test_signature_is_standard_padded_base64_of_hmac_sha256() -> None:
    digest = hmac.new(SECRET.encode(), TOKEN.encode(), hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    assert len(expected) == 44 and expected.endswith("=")
    assert sign_token(TOKEN, SECRET) == f"{TOKEN}.{expected}"


def test_cookie_value_is_encode_uri_component_of_signed_value() -> None:
    signed = sign_token(TOKEN, SECRET)
    encoded = signed.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert cookie_value(TOKEN, SECRET) == encoded


def test_cookie_value_leaves_what_encode_uri_component_leaves() -> None:
    # encodeURIComponent keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ) and encodes the rest.
    value = cookie_value("a b!~*'()-_/", SECRET)
    assert value.startswith("a%20b!~*'()-_%2F.")


def test_sign_verify_round_trip() -> None:
    assert verify_signed(sign_token(TOKEN, SECRET), SECRET) == TOKEN


def test_url_encoded_cookie_value_verifies() -> None:
    encoded = cookie_value(TOKEN, SECRET)
    assert "%" in encoded
    assert verify_signed(encoded, SECRET) == TOKEN


def test_tampered_signature_is_rejected() -> None:
    signed = sign_token(TOKEN, SECRET)
    last = "A" if signed[-2] != "A" else "B"
    assert verify_signed(signed[:-2] + last + "=", SECRET) is None


def test_tampered_token_is_rejected() -> None:
    signature = sign_token(TOKEN, SECRET).rsplit(".", 1)[1]
    assert verify_signed(f"{TOKEN[:-1]}X.{signature}", SECRET) is None


def test_wrong_secret_is_rejected() -> None:
    assert verify_signed(sign_token(TOKEN, SECRET), SECRET + "x") is None


def test_split_is_at_the_last_dot() -> None:
    token = "part.one.two"
    assert verify_signed(sign_token(token, SECRET), SECRET) == token


@pytest.mark.parametrize(
    "value",
    [
        "",
        "no-dot-at-all",
        ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # empty token
        f"{TOKEN}.",  # empty signature
        f"{TOKEN}.tooshort=",
        f"{TOKEN}." + "A" * 44,  # 44 characters but unpadded
    ],
)
def test_malformed_signed_values_are_rejected(value: str) -> None:
    assert verify_signed(value, SECRET) is None


def test_oversized_value_is_rejected() -> None:
    token = "a" * MAX_CREDENTIAL_LENGTH
    assert verify_signed(sign_token(token, SECRET), SECRET) is None


@pytest.mark.parametrize("bad", [" ", "\t", "\x00", "\x7f", "é"])
def test_whitespace_control_and_non_ascii_are_rejected(bad: str) -> None:
    token = f"ab{bad}cd"
    assert verify_signed(sign_token(token, SECRET), SECRET) is None
    assert verify_signed(cookie_value(token, SECRET), SECRET) is None


def test_invalid_utf8_percent_escape_is_rejected() -> None:
    signature = sign_token(TOKEN, SECRET).rsplit(".", 1)[1]
    assert verify_signed(f"%FF{TOKEN}.{signature}", SECRET) is None


def test_empty_secret_never_verifies_and_cannot_sign() -> None:
    assert verify_signed(sign_token(TOKEN, SECRET), "") is None
    with pytest.raises(ValueError, match="secret"):
        sign_token(TOKEN, "")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_raw_token_is_accepted(scheme: str) -> None:
    assert token_from_request(f"{scheme} {TOKEN}", {}, SECRET) == TOKEN


def test_bearer_raw_token_needs_no_secret() -> None:
    assert token_from_request(f"Bearer {TOKEN}", {}, None) == TOKEN


@pytest.mark.parametrize("form", [sign_token, cookie_value])
def test_bearer_signed_token_is_verified(form: Callable[[str, str], str]) -> None:
    assert token_from_request(f"Bearer {form(TOKEN, SECRET)}", {}, SECRET) == TOKEN


def test_bearer_with_bad_signature_is_rejected_without_cookie_fallback() -> None:
    forged = sign_token(TOKEN, "another secret")
    cookies = {PLAIN: cookie_value("SomeoneElse", SECRET)}
    assert token_from_request(f"Bearer {forged}", cookies, SECRET) is None


def test_bearer_with_dot_but_no_secret_is_rejected() -> None:
    assert token_from_request(f"Bearer {sign_token(TOKEN, SECRET)}", {}, None) is None


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer  ", f"Bearer {TOKEN} extra", f"Bearer {'a' * 2000}"],
)
def test_empty_oversized_or_spaced_bearer_is_rejected(header: str) -> None:
    assert token_from_request(header, {}, SECRET) is None


def test_other_authorization_schemes_are_ignored() -> None:
    cookies = {PLAIN: cookie_value(TOKEN, SECRET)}
    assert token_from_request("Basic dXNlcjpwYXNz", cookies, SECRET) == TOKEN
    assert token_from_request("Basic dXNlcjpwYXNz", {}, SECRET) is None


@pytest.mark.parametrize("name", COOKIE_NAMES)
def test_signed_cookie_is_accepted(name: str) -> None:
    assert token_from_request(None, {name: cookie_value(TOKEN, SECRET)}, SECRET) == TOKEN


def test_cookie_without_signature_is_rejected() -> None:
    assert token_from_request(None, {PLAIN: TOKEN}, SECRET) is None


def test_cookie_with_forged_signature_is_rejected() -> None:
    cookies = {PLAIN: cookie_value(TOKEN, "not the secret")}
    assert token_from_request(None, cookies, SECRET) is None


def test_cookie_needs_a_configured_secret() -> None:
    assert token_from_request(None, {PLAIN: cookie_value(TOKEN, SECRET)}, None) is None


def test_secure_cookie_is_preferred() -> None:
    cookies = {PLAIN: cookie_value("PlainToken", SECRET), SECURE: cookie_value(TOKEN, SECRET)}
    assert token_from_request(None, cookies, SECRET) == TOKEN


def test_invalid_secure_cookie_does_not_fall_back_to_plain() -> None:
    cookies = {PLAIN: cookie_value("PlainToken", SECRET), SECURE: TOKEN}
    assert token_from_request(None, cookies, SECRET) is None


def test_quoted_cookie_value_is_accepted() -> None:
    cookies = {PLAIN: f'"{cookie_value(TOKEN, SECRET)}"'}
    assert token_from_request(None, cookies, SECRET) == TOKEN


def test_no_credentials_is_none() -> None:
    assert token_from_request(None, {}, SECRET) is None
    assert token_from_request(None, {"other": "x"}, SECRET) is None


@pytest.mark.parametrize("make", [new_token, new_id])
def test_new_tokens_and_ids_look_like_generate_id(make: Callable[[], str]) -> None:
    values = {make() for _ in range(50)}
    assert len(values) == 50
    alphabet = set(string.ascii_letters + string.digits)
    for value in values:
        assert len(value) == 32 and set(value) <= alphabet


def test_new_token_round_trips_through_a_cookie() -> None:
    token = new_token()
    assert token_from_request(None, {SECURE: cookie_value(token, SECRET)}, SECRET) == token
