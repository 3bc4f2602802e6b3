"""Pure pieces of the ZITADEL client: id checks and reading error answers."""

from __future__ import annotations

import json

import pytest

from lockoutd.act.zitadel import ErrorAnswer, check_id, read_error
from lockoutd.errors import InvalidUserId


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("value", ["1", "69629023906488334", "0" * 64])
def test_digit_strings_are_ids(value: str) -> None:
    """A digit string of up to 64 characters is a ZITADEL id."""
    assert check_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "../1",
        "..",
        "1/2",
        "1%2F2",
        "%2e%2e",
        "12\n",
        "12 ",
        "-12",
        "0x12",
        "\uff11\uff12",  # full-width digits pass str.isdigit() but are not ZITADEL ids
        "\u0661\u0662",  # Arabic-Indic digits
        "1" * 65,
        "12?x=1",
        "12#",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    """Anything but a short ASCII digit string raises InvalidUserId."""
    with pytest.raises(InvalidUserId):
        check_id(value)


def test_the_refusal_names_the_kind_of_id() -> None:
    """The message says which id was refused, so the event can be traced."""
    with pytest.raises(InvalidUserId, match=r"org id '\.\./x'"):
        check_id("../x", what="org id")


def test_details_id_and_code_classify() -> None:
    """details[0].id and the numeric code are read from a grpc-gateway error body."""
    body = _body(
        code=9,
        message="Benutzer ist nicht aktiv (COMMAND-3NN8v)",
        details=[{"@type": "type.googleapis.com/zitadel.v1.ErrorDetail", "id": "COMMAND-3NN8v"}],
    )
    assert read_error(400, body) == ErrorAnswer(400, 9, "COMMAND-3NN8v")


def test_message_suffix_is_the_fallback_id() -> None:
    """Without details, the (ID) suffix of the message gives the id."""
    body = _body(code=16, message="Errors.Token.Invalid (AUTH-7fs1e)")
    assert read_error(401, body) == ErrorAnswer(401, 16, "AUTH-7fs1e")


def test_details_win_over_the_message() -> None:
    """details[0].id is preferred to whatever the message says."""
    body = _body(code=5, message="oops (OTHER-1)", details=[{"id": "COMMAND-5M9fs"}])
    assert read_error(404, body).id == "COMMAND-5M9fs"


@pytest.mark.parametrize(
    "content",
    [
        b"<html>502 Bad Gateway</html>",
        b"",
        b"[]",
        b'"text"',
        _body(code="9", message="no id here"),
        _body(code=True, details=[{"id": 7}]),
        _body(details=["COMMAND-3NN8v"]),
    ],
)
def test_foreign_bodies_carry_only_the_status(content: bytes) -> None:
    """Bodies that are not ZITADEL errors classify by status alone."""
    answer = read_error(502, content)
    assert answer.status == 502
    assert answer.id is None


def test_description_names_status_code_and_id() -> None:
    """An answer describes itself without the message text."""
    assert ErrorAnswer(404, 5, "AUTHZ-cdgFk").describe() == "HTTP 404, code 5, AUTHZ-cdgFk"
    assert ErrorAnswer(418).describe() == "HTTP 418"
