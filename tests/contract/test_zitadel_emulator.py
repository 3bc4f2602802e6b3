"""The ZITADEL emulator against the reference contract, over real HTTP.

Every test talks to a running emulator through httpx and asserts what a client would notice:
status, gRPC code, ``details[0].id``, state changes, headers, timing and transport errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from lockoutd.testing.zitadel_emulator import (
    API_AUDIENCE_SCOPE,
    CATALOGUE,
    Fault,
    UserState,
    ZitadelEmulator,
)

ORG_A, ORG_B, UNKNOWN_ORG = "300", "400", "999"
ALICE, BOB, NOBODY = "259242039378444290", "259242039378444291", "259242039378444299"

# Service accounts: (token, user id, org, roles).
IAM_PAT = "pat-iam-user-manager"  # IAM_USER_MANAGER, lives in the default org
ORG_PAT = "pat-org-a-user-manager"  # ORG_USER_MANAGER on ORG_A only, lives in ORG_A
NONE_PAT = "pat-no-membership"  # no membership at all, lives in ORG_A
VIEWER_PAT = "pat-iam-owner-viewer"  # IAM_OWNER_VIEWER: may read, may not write
ORG_SA, NONE_SA = "100000000000000010", "100000000000000011"

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

V1, V2, V2BETA = "v1", "v2", "v2beta"


@pytest.fixture
def emu() -> Iterator[ZitadelEmulator]:
    with ZitadelEmulator() as running:
        running.add_org(ORG_A, "acme")
        running.add_org(ORG_B, "globex")
        running.add_user(ALICE, org_id=ORG_A, login_name="alice@acme.example")
        running.add_user(BOB, org_id=ORG_B, login_name="bob@globex.example")
        running.add_pat(IAM_PAT, roles={"instance": {"IAM_USER_MANAGER"}})
        running.add_pat(ORG_PAT, roles={ORG_A: {"ORG_USER_MANAGER"}}, user_id=ORG_SA, org_id=ORG_A)
        running.add_pat(NONE_PAT, roles=None, user_id=NONE_SA, org_id=ORG_A)
        running.add_pat(
            VIEWER_PAT, roles={"instance": {"IAM_OWNER_VIEWER"}}, user_id="100000000000000012"
        )
        yield running


@pytest.fixture
def client(emu: ZitadelEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=5.0) as http:
        yield http


def _headers(token: str | None, org: str | None) -> dict[str, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if org is not None:
        headers["x-zitadel-orgid"] = org
    return headers


def change(
    client: httpx.Client,
    api: str,
    user_id: str,
    action: str = "lock",
    *,
    token: str | None = IAM_PAT,
    org: str | None = None,
) -> httpx.Response:
    """Lock or unlock ``user_id`` through one API; v1 defaults its org header to the user's."""
    if api == V1:
        path = f"/management/v1/users/{user_id}/_{action}"
        org = org or (ORG_B if user_id == BOB else ORG_A)
    else:
        path = f"/{api}/users/{user_id}/{action}"
    return client.post(path, json={}, headers=_headers(token, org))


def get_user(
    client: httpx.Client, api: str, user_id: str, *, token: str = IAM_PAT, org: str | None = None
) -> httpx.Response:
    prefix = "/management/v1" if api == V1 else "/v2"
    return client.get(f"{prefix}/users/{user_id}", headers=_headers(token, org))


def assert_error(response: httpx.Response, status: int, code: int, error_id: str) -> None:
    body = response.json()
    assert (response.status_code, body["code"], body["details"][0]["id"]) == (
        status,
        code,
        error_id,
    ), body
    assert body["message"] == f"{body['details'][0]['message']} ({error_id})"
    assert body["details"][0]["@type"] == "type.googleapis.com/zitadel.v1.ErrorDetail"


LOCK_IDS = {
    V1: ("COMMAND-3NN8v", "COMMAND-5M9fs"),
    V2: ("COMMAND-lgws8wtsqf", "COMMAND-450yxuqrh1"),
    V2BETA: ("COMMAND-lgws8wtsqf", "COMMAND-450yxuqrh1"),
}
UNLOCK_IDS = {
    V1: ("COMMAND-4M0ds", "COMMAND-M0dos"),
    V2: ("COMMAND-olb9vb0oca", "COMMAND-x377t913pw"),
    V2BETA: ("COMMAND-olb9vb0oca", "COMMAND-x377t913pw"),
}
apis = pytest.mark.parametrize("api", [V1, V2, V2BETA])


# -- lock and unlock ----------------------------------------------------------------------------


@apis
def test_lock_locks_an_active_user(emu: ZitadelEmulator, client: httpx.Client, api: str) -> None:
    """A lock of an active user answers 200 with change details and leaves the user LOCKED."""
    response = change(client, api, ALICE)

    assert response.status_code == 200
    details = response.json()["details"]
    assert set(details) == {"sequence", "changeDate", "resourceOwner"}
    assert details["resourceOwner"] == ORG_A
    assert isinstance(details["sequence"], str)
    assert details["sequence"].isdigit()
    assert datetime.fromisoformat(details["changeDate"]).tzinfo is not None
    assert emu.state_of(ALICE) is UserState.LOCKED


@apis
@pytest.mark.parametrize("state", [UserState.LOCKED, UserState.INACTIVE, UserState.SUSPEND])
def test_lock_of_a_user_not_active_answers_400_code_9(
    emu: ZitadelEmulator, client: httpx.Client, api: str, state: UserState
) -> None:
    """A locked, deactivated or suspended user's lock answers 400 with code 9 and one ID."""
    emu.set_state(ALICE, state)

    assert_error(change(client, api, ALICE), 400, 9, LOCK_IDS[api][0])
    assert emu.state_of(ALICE) is state


@apis
def test_second_lock_answers_400_code_9(client: httpx.Client, api: str) -> None:
    """A locked user's second lock answers 400 with code 9."""
    assert change(client, api, ALICE).status_code == 200

    assert_error(change(client, api, ALICE), 400, 9, LOCK_IDS[api][0])


@apis
def test_initial_user_locks_and_unlocks_to_active(
    emu: ZitadelEmulator, client: httpx.Client, api: str
) -> None:
    """An INITIAL user locks fine, and unlock always leaves it ACTIVE."""
    emu.set_state(ALICE, UserState.INITIAL)

    assert change(client, api, ALICE).status_code == 200
    assert change(client, api, ALICE, "unlock").status_code == 200
    assert emu.state_of(ALICE) is UserState.ACTIVE


@apis
def test_unknown_and_removed_users_answer_404(
    emu: ZitadelEmulator, client: httpx.Client, api: str
) -> None:
    """Locking or unlocking an id that does not exist, or a removed user, answers 404 code 5."""
    emu.remove_user(BOB)
    for user_id in (NOBODY, BOB):
        assert_error(change(client, api, user_id, org=ORG_B), 404, 5, LOCK_IDS[api][1])
        assert_error(change(client, api, user_id, "unlock", org=ORG_B), 404, 5, UNLOCK_IDS[api][1])


@apis
def test_unlock_of_a_user_not_locked_answers_400(client: httpx.Client, api: str) -> None:
    """Unlocking an active user answers 400 with code 9 and the not-locked ID."""
    assert_error(change(client, api, ALICE, "unlock"), 400, 9, UNLOCK_IDS[api][0])


def test_sequence_grows_with_every_change(client: httpx.Client) -> None:
    """Each lock or unlock answers a larger sequence than the change before it."""
    sequences = [
        int(change(client, api, ALICE, action).json()["details"]["sequence"])
        for api, action in [(V2, "lock"), (V1, "unlock"), (V2BETA, "lock"), (V2, "unlock")]
    ]

    assert sequences == sorted(set(sequences))


@pytest.mark.parametrize("api", [V1, V2])
def test_a_change_answers_the_version_a_read_then_shows(
    emu: ZitadelEmulator, client: httpx.Client, api: str
) -> None:
    """As ZITADEL's eventstore does: each change of a user moves that user's own sequence by
    one and stamps its change date; the change answers both, and a read shows the same until
    the next change. Other users' changes do not move it."""
    locked = change(client, api, ALICE).json()["details"]
    change(client, api, BOB)  # another user's change

    def read() -> dict[str, Any]:
        body = get_user(client, api, ALICE, org=ORG_A).json()
        details: dict[str, Any] = body["user"]["details"]
        if api == V2:
            assert body["details"] == details  # v2 repeats them at the top level
        return details

    shown = read()
    assert (shown["sequence"], shown["changeDate"]) == (locked["sequence"], locked["changeDate"])
    emu.set_state(ALICE, UserState.ACTIVE)  # an administrator unlocks...
    emu.set_state(ALICE, UserState.LOCKED)  # ...and locks again
    again = read()
    assert int(again["sequence"]) == int(locked["sequence"]) + 2
    assert again["changeDate"] > locked["changeDate"]


def test_a_reply_dropped_after_applying_leaves_the_change_made(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """``drop_after_applying``: the lock happens, the client sees a dropped connection, and a
    retry hears "already locked"."""
    emu.set_fault(Fault.drop_after_applying(times=1))

    with pytest.raises(httpx.TransportError):
        change(client, V2, ALICE)

    assert emu.state_of(ALICE) is UserState.LOCKED
    assert_error(change(client, V2, ALICE), 400, 9, LOCK_IDS[V2][0])
    assert [c.status for c in emu.lock_calls(ALICE)] == [None, 400]


def test_empty_body_and_no_body_are_accepted(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """A lock with an empty body and an unlock with no body at all both succeed."""
    headers = _headers(IAM_PAT, ORG_A)
    locked = client.post(f"/management/v1/users/{ALICE}/_lock", content=b"", headers=headers)
    unlocked = client.post(f"/v2/users/{ALICE}/unlock", headers=headers)

    assert (locked.status_code, unlocked.status_code) == (200, 200)


def test_invalid_json_body_answers_400_code_3(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """A body that is not a JSON object answers 400 with code 3 and changes nothing."""
    for body in (b"{not json", b"[]"):
        response = client.post(
            f"/v2/users/{ALICE}/lock", content=body, headers=_headers(IAM_PAT, None)
        )
        assert (response.status_code, response.json()["code"]) == (400, 3)
    assert emu.state_of(ALICE) is UserState.ACTIVE


def test_percent_encoded_slash_stays_inside_the_id(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """An id with ``%2F`` is looked up literally and never routed to another endpoint."""
    emu.add_user("x/y", org_id=ORG_A)
    headers = _headers(IAM_PAT, None)

    unknown = client.post(f"/v2/users/{ALICE}%2F..%2F{BOB}/lock", json={}, headers=headers)
    smuggled = client.post(f"/v2/users/{ALICE}%2Flock", json={}, headers=headers)
    literal = client.post("/v2/users/x%2Fy/lock", json={}, headers=headers)

    assert_error(unknown, 404, 5, "COMMAND-450yxuqrh1")
    assert smuggled.status_code != 200
    assert literal.status_code == 200
    assert emu.state_of(ALICE) is UserState.ACTIVE
    assert emu.state_of("x/y") is UserState.LOCKED
    assert [c.user_id for c in emu.lock_calls()] == [f"{ALICE}/../{BOB}", "x/y"]


# -- org scoping ----------------------------------------------------------------------------------


def test_v1_user_of_another_org_looks_unknown(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """v1 answers 404 COMMAND-5M9fs for a user outside the context org, header or not."""
    assert_error(change(client, V1, ALICE, org=ORG_B), 404, 5, "COMMAND-5M9fs")
    no_header = client.post(
        f"/management/v1/users/{ALICE}/_lock", json={}, headers=_headers(IAM_PAT, None)
    )
    assert_error(no_header, 404, 5, "COMMAND-5M9fs")
    assert_error(change(client, V1, ALICE, "unlock", org=ORG_B), 404, 5, "COMMAND-M0dos")
    assert emu.state_of(ALICE) is UserState.ACTIVE


def test_v1_without_header_acts_in_the_callers_org(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """Without ``x-zitadel-orgid`` v1 acts in the service account's own org."""
    response = client.post(
        f"/management/v1/users/{ALICE}/_lock", json={}, headers=_headers(ORG_PAT, None)
    )

    assert response.status_code == 200
    assert emu.state_of(ALICE) is UserState.LOCKED


def test_v2_finds_users_in_every_org(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """v2 looks users up instance-wide, so no org header is needed."""
    assert change(client, V2, BOB).status_code == 200
    assert emu.state_of(BOB) is UserState.LOCKED


def test_get_user_404s(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """Reading a user answers MANAG-fpo4B for another org (v1) and QUERY-Dfbg2 when missing."""
    assert_error(get_user(client, V1, BOB, org=ORG_A), 404, 5, "MANAG-fpo4B")
    assert_error(get_user(client, V1, NOBODY, org=ORG_A), 404, 5, "QUERY-Dfbg2")
    assert_error(get_user(client, V2, NOBODY), 404, 5, "QUERY-Dfbg2")


@pytest.mark.parametrize("state", list(UserState))
def test_get_user_reports_the_state(
    emu: ZitadelEmulator, client: httpx.Client, state: UserState
) -> None:
    """Both get-user APIs report the state by name; v2 has no SUSPEND and omits it."""
    emu.set_state(ALICE, state)
    v1 = get_user(client, V1, ALICE, org=ORG_A)
    v2 = get_user(client, V2, ALICE)

    if state is UserState.DELETED:
        assert (v1.status_code, v2.status_code) == (404, 404)
        return
    assert v1.json()["user"]["state"] == state.value
    assert v2.json()["user"].get("state") == (None if state is UserState.SUSPEND else state.value)


# -- authentication and authorization -------------------------------------------------------------


@apis
def test_missing_authorization_answers_401_without_details(client: httpx.Client, api: str) -> None:
    """No Authorization header answers 401, code 16, "auth header missing", no details."""
    response = change(client, api, ALICE, token=None)

    assert response.status_code == 401
    assert response.json() == {"code": 16, "message": "auth header missing"}
    assert response.headers["www-authenticate"] == "auth header missing"


@apis
@pytest.mark.parametrize("value", ["Basic dXNlcjpwdw==", "Bearer", "bearer abc"])
def test_malformed_authorization_answers_auth_tolo1(
    client: httpx.Client, api: str, value: str
) -> None:
    """An Authorization header not of the form ``Bearer <token>`` answers 401 AUTH-toLo1."""
    path = f"/management/v1/users/{ALICE}/_lock" if api == V1 else f"/{api}/users/{ALICE}/lock"
    response = client.post(path, json={}, headers={"Authorization": value})

    assert_error(response, 401, 16, "AUTH-toLo1")


@apis
def test_bad_and_revoked_tokens_answer_auth_7fs1e(
    emu: ZitadelEmulator, client: httpx.Client, api: str
) -> None:
    """An unknown or revoked token answers 401 AUTH-7fs1e with the raw key and WWW-Authenticate."""
    emu.revoke_token(ORG_PAT)
    for token in ("no-such-token", ORG_PAT):
        response = change(client, api, ALICE, token=token)
        assert_error(response, 401, 16, "AUTH-7fs1e")
        assert response.json()["message"] == "Errors.Token.Invalid (AUTH-7fs1e)"
        assert response.headers["www-authenticate"] == "Errors.Token.Invalid (AUTH-7fs1e)"


@apis
def test_unknown_org_header_answers_403_auth_bs7ds(client: httpx.Client, api: str) -> None:
    """An ``x-zitadel-orgid`` naming no org answers 403 AUTH-Bs7Ds, untranslated."""
    response = change(client, api, ALICE, org=UNKNOWN_ORG)

    assert_error(response, 403, 7, "AUTH-Bs7Ds")
    assert response.json()["details"][0]["message"] == "Organisation doesn't exist"


@apis
def test_no_membership_answers_404_authz_cdgfk(
    emu: ZitadelEmulator, client: httpx.Client, api: str
) -> None:
    """A service account without any membership gets 404 AUTHZ-cdgFk for a lockable user."""
    response = change(client, api, ALICE, token=NONE_PAT)

    assert_error(response, 404, 5, "AUTHZ-cdgFk")
    assert response.json()["message"] == "membership not found (AUTHZ-cdgFk)"
    assert emu.state_of(ALICE) is UserState.ACTIVE


@apis
def test_membership_in_another_org_does_not_count(client: httpx.Client, api: str) -> None:
    """ORG_USER_MANAGER on one org is no membership at all for a user of another org."""
    assert_error(change(client, api, BOB, token=ORG_PAT), 404, 5, "AUTHZ-cdgFk")


@pytest.mark.parametrize(("api", "error_id"), [(V1, "AUTH-5mWD2"), (V2, "AUTH-AWfge")])
def test_membership_without_user_write_answers_403(
    client: httpx.Client, api: str, error_id: str
) -> None:
    """A viewer may read a user but its lock answers 403 with the API's ID."""
    assert get_user(client, api, ALICE, token=VIEWER_PAT, org=ORG_A).status_code == 200

    response = change(client, api, ALICE, token=VIEWER_PAT)

    assert_error(response, 403, 7, error_id)
    assert response.json()["details"][0]["message"] == "No matching permissions found"


def test_v2_checks_state_before_permission(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """Without rights, v2 still answers 404 and 400 for missing and locked users; v1 does not."""
    emu.set_state(BOB, UserState.LOCKED)

    assert_error(change(client, V2, NOBODY, token=NONE_PAT), 404, 5, "COMMAND-450yxuqrh1")
    assert_error(change(client, V2, BOB, token=NONE_PAT), 400, 9, "COMMAND-lgws8wtsqf")
    assert_error(change(client, V2, ALICE, token=NONE_PAT), 404, 5, "AUTHZ-cdgFk")
    assert_error(change(client, V1, NOBODY, token=NONE_PAT), 404, 5, "AUTHZ-cdgFk")


@pytest.mark.parametrize("api", [V2, V2BETA])
@pytest.mark.parametrize("action", ["lock", "unlock"])
def test_v2_checks_user_write_when_the_caller_acts_on_itself(
    emu: ZitadelEmulator, client: httpx.Client, api: str, action: str
) -> None:
    """Since 2025-09 a service account needs ``user.write`` to lock or unlock even itself."""
    viewer = "100000000000000012"
    if action == "unlock":
        emu.set_state(viewer, UserState.LOCKED)
        emu.set_state(NONE_SA, UserState.LOCKED)
    before = emu.state_of(viewer)

    assert_error(change(client, api, viewer, action, token=VIEWER_PAT), 403, 7, "AUTH-AWfge")
    assert_error(change(client, api, NONE_SA, action, token=NONE_PAT), 404, 5, "AUTHZ-cdgFk")
    assert (emu.state_of(viewer), emu.state_of(NONE_SA)) == (before, before)


def test_roles_can_change_at_runtime(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """Granting a role to a service account takes effect on its next request."""
    assert change(client, V2, ALICE, token=NONE_PAT).status_code == 404

    emu.set_roles(NONE_SA, {ORG_A: {"ORG_USER_MANAGER"}})

    assert change(client, V2, ALICE, token=NONE_PAT).status_code == 200


# -- finding users by login name ------------------------------------------------------------------


def _login_query(login_name: str, method: str = "TEXT_QUERY_METHOD_EQUALS") -> dict[str, Any]:
    return {
        "query": {"limit": 2},
        "queries": [{"loginNameQuery": {"loginName": login_name, "method": method}}],
    }


def test_v1_search_is_scoped_to_the_context_org(client: httpx.Client) -> None:
    """v1 search finds a login name in the context org only and omits empty results."""
    headers = _headers(IAM_PAT, ORG_A)
    found = client.post(
        "/management/v1/users/_search", json=_login_query("alice@acme.example"), headers=headers
    )
    other_org = client.post(
        "/management/v1/users/_search", json=_login_query("bob@globex.example"), headers=headers
    )

    assert [u["id"] for u in found.json()["result"]] == [ALICE]
    assert found.json()["details"]["totalResult"] == "1"
    assert other_org.status_code == 200
    assert "result" not in other_org.json()
    assert "totalResult" not in other_org.json()["details"]


def test_v1_search_methods_and_snake_case(client: httpx.Client) -> None:
    """EQUALS is exact, EQUALS_IGNORE_CASE is not, and snake_case fields are accepted."""
    headers = _headers(IAM_PAT, ORG_A)
    exact = _login_query("ALICE@acme.example")
    ignore_case = _login_query("ALICE@acme.example", "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE")
    snake = {"queries": [{"user_name_query": {"user_name": "alice@acme.example"}}]}

    results = [
        client.post("/management/v1/users/_search", json=body, headers=headers).json()
        for body in (exact, ignore_case, snake)
    ]

    assert [len(r.get("result", [])) for r in results] == [0, 1, 1]


def test_v1_global_lookup_by_login_name(client: httpx.Client) -> None:
    """The global lookup finds users of any org by exact login name and needs a membership."""
    path = "/management/v1/global/users/_by_login_name"
    found = client.get(
        path, params={"loginName": "Bob@Globex.example"}, headers=_headers(IAM_PAT, None)
    )
    missing = client.get(path, params={"loginName": "bob@globex"}, headers=_headers(IAM_PAT, None))
    denied = client.get(
        path, params={"loginName": "bob@globex.example"}, headers=_headers(NONE_PAT, None)
    )

    assert found.json()["user"]["id"] == BOB
    assert_error(missing, 404, 5, "QUERY-Dfbg2")
    assert_error(denied, 404, 5, "AUTHZ-cdgFk")


def test_v1_global_lookup_validates_the_login_name_length(client: httpx.Client) -> None:
    """An empty or over-long name is refused by request validation (code 3, no details)."""
    path = "/management/v1/global/users/_by_login_name"
    for name in ("", "x" * 201):
        response = client.get(path, params={"loginName": name}, headers=_headers(IAM_PAT, None))
        assert response.status_code == 400
        assert response.json() == {
            "code": 3,
            "message": "invalid GetUserByLoginNameGlobalRequest.LoginName: value length must be "
            "between 1 and 200 runes, inclusive",
        }


def test_v2_list_users_filters_by_permission(client: httpx.Client) -> None:
    """v2 list finds a login name instance-wide but only among users the caller may read."""
    body = _login_query("bob@globex.example")
    by_iam = client.post("/v2/users", json=body, headers=_headers(IAM_PAT, None)).json()
    by_org_a = client.post("/v2/users", json=body, headers=_headers(ORG_PAT, None)).json()

    assert [u["userId"] for u in by_iam["result"]] == [BOB]
    assert "result" not in by_org_a


def test_v2_list_users_shows_the_caller_itself_without_user_read(client: httpx.Client) -> None:
    """Without any membership only the caller's own user is listed, never an error."""
    everyone = {"query": {"limit": 100}}
    by_none = client.post("/v2/users", json=everyone, headers=_headers(NONE_PAT, None))

    assert by_none.status_code == 200
    assert [u["userId"] for u in by_none.json()["result"]] == [NONE_SA]


MY_PERMISSIONS = "/auth/v1/permissions/zitadel/me/_search"


def test_my_permissions_are_those_of_the_context_org_and_the_instance(
    client: httpx.Client,
) -> None:
    """ListMyZitadelPermissions answers for the caller's own org, or the header's, plus the
    instance; no membership there is an empty answer, not an error."""

    def permissions(token: str, org: str | None) -> list[str]:
        response = client.post(MY_PERMISSIONS, headers=_headers(token, org))
        assert response.status_code == 200, response.text
        result: list[str] = response.json().get("result", [])
        return result

    assert {"user.read", "user.global.read", "user.write"} <= set(permissions(ORG_PAT, None))
    assert permissions(ORG_PAT, ORG_B) == []
    assert {"user.read", "user.write"} <= set(permissions(IAM_PAT, ORG_B))
    assert permissions(NONE_PAT, None) == []
    assert "user.write" not in permissions(VIEWER_PAT, None)
    assert_error(client.post(MY_PERMISSIONS, headers=_headers(ORG_PAT, UNKNOWN_ORG)),
                 403, 7, "AUTH-Bs7Ds")  # fmt: skip


def test_a_user_with_several_login_names_is_found_and_shown_by_each(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """ZITADEL knows a user by one login name per verified domain: a login-name query matches
    any of them, and reads list them all in ``loginNames``, the preferred one first."""
    emu.add_login_name(ALICE, "alice@acme.internal")
    body = _login_query("Alice@Acme.Internal", "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE")
    found = client.post("/v2/users", json=body, headers=_headers(IAM_PAT, None)).json()
    user = get_user(client, V2, ALICE).json()["user"]

    assert [u["userId"] for u in found["result"]] == [ALICE]
    assert user["loginNames"] == ["alice@acme.example", "alice@acme.internal"]
    assert user["preferredLoginName"] == "alice@acme.example"
    with pytest.raises(ValueError, match="taken"):
        emu.add_login_name(BOB, "ALICE@acme.internal")


# -- token endpoint -------------------------------------------------------------------------------


def _assertion(key_file: Mapping[str, str], aud: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": key_file["userId"],
        "sub": key_file["userId"],
        "aud": aud,
        "iat": now,
        "exp": now + 60,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(
        payload, key_file["key"], algorithm="RS256", headers={"kid": key_file["keyId"]}
    )


def _grant(
    client: httpx.Client, assertion: str, scope: str = f"openid {API_AUDIENCE_SCOPE}"
) -> httpx.Response:
    return client.post(
        "/oauth/v2/token", data={"grant_type": JWT_BEARER, "scope": scope, "assertion": assertion}
    )


@pytest.fixture
def key_file(emu: ZitadelEmulator) -> dict[str, str]:
    return emu.add_service_account_key(
        user_id="100000000000000020", roles={"instance": {"IAM_USER_MANAGER"}}
    )


def test_key_file_has_zitadels_shape(key_file: dict[str, str]) -> None:
    """The key file carries ZITADEL's five fields and a PKCS#1 PEM private key."""
    assert list(key_file) == ["type", "keyId", "key", "expirationDate", "userId"]
    assert key_file["type"] == "serviceaccount"
    assert key_file["key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert datetime.fromisoformat(key_file["expirationDate"]).year == 9999


def test_valid_assertion_gets_a_working_token(
    emu: ZitadelEmulator, client: httpx.Client, key_file: dict[str, str]
) -> None:
    """A valid assertion yields a Bearer token of about 12h that the API accepts."""
    response = _grant(client, _assertion(key_file, emu.instance_url))

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 43190 <= body["expires_in"] <= 43200
    assert change(client, V2, ALICE, token=body["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"aud": "https://elsewhere.example"}, id="wrong-aud"),
        pytest.param({"exp": int(time.time()) - 120}, id="expired"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": int(time.time()) - 7300, "exp": int(time.time()) + 60}, id="old-iat"),
        pytest.param({"sub": "someone-else"}, id="sub-not-iss"),
    ],
)
def test_bad_assertions_are_rejected(
    emu: ZitadelEmulator, client: httpx.Client, key_file: dict[str, str], claims: dict[str, Any]
) -> None:
    """An assertion with a wrong aud, no or past exp, old iat, or sub != iss gets invalid_grant."""
    aud = claims.pop("aud", emu.instance_url)
    response = _grant(client, _assertion(key_file, aud, **claims))

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_assertion_signed_with_another_key_is_rejected(
    emu: ZitadelEmulator, client: httpx.Client, key_file: dict[str, str]
) -> None:
    """An assertion naming a registered kid but signed by a different key gets invalid_grant."""
    other = emu.add_service_account_key(user_id="100000000000000021")
    forged = _assertion({**key_file, "key": other["key"]}, emu.instance_url)

    response = _grant(client, forged)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_token_without_api_audience_is_rejected_by_the_api(
    emu: ZitadelEmulator, client: httpx.Client, key_file: dict[str, str]
) -> None:
    """A token granted without the ZITADEL audience scope answers 401 AUTH-7fs1e at the API."""
    response = _grant(client, _assertion(key_file, emu.instance_url), scope="openid")

    assert response.status_code == 200
    assert_error(
        change(client, V2, ALICE, token=response.json()["access_token"]), 401, 16, "AUTH-7fs1e"
    )


def test_unsupported_grant_type_is_rejected(client: httpx.Client) -> None:
    """A grant type other than the JWT bearer grant gets unsupported_grant_type."""
    response = client.post("/oauth/v2/token", data={"grant_type": "password"})

    assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type")


def test_access_tokens_expire_after_the_lifetime(
    emu: ZitadelEmulator, client: httpx.Client, key_file: dict[str, str]
) -> None:
    """With a short lifetime the issued token stops working once it has passed."""
    emu.access_token_lifetime = 0.3
    token = _grant(client, _assertion(key_file, emu.instance_url)).json()["access_token"]
    assert get_user(client, V2, ALICE, token=token).status_code == 200

    time.sleep(0.4)

    assert_error(get_user(client, V2, ALICE, token=token), 401, 16, "AUTH-7fs1e")


# -- faults ---------------------------------------------------------------------------------------


def test_latency_fault_delays_answers(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """A latency fault makes every request wait before it is answered, until cleared."""
    emu.set_fault(Fault.latency(0.2))
    started = time.monotonic()
    for _ in range(2):
        assert get_user(client, V2, ALICE).status_code == 200
    slowed = time.monotonic() - started
    emu.clear_faults()
    started = time.monotonic()
    get_user(client, V2, ALICE)

    assert slowed >= 0.4
    assert time.monotonic() - started < 0.2


def test_status_fault_answers_n_times_then_recovers(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """``Fault.status(503, times=3)`` answers three gRPC-shaped 503s, then the real answer."""
    emu.set_fault(Fault.status(503, times=3))

    answers = [change(client, V2, ALICE) for _ in range(4)]

    assert [a.status_code for a in answers] == [503, 503, 503, 200]
    assert answers[0].json()["code"] == 14
    assert emu.state_of(ALICE) is UserState.LOCKED


def test_status_500_fault_carries_code_13(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """An injected 500 carries gRPC code 13 INTERNAL."""
    emu.set_fault(Fault.status(500, times=1))

    response = get_user(client, V2, ALICE)

    assert (response.status_code, response.json()["code"]) == (500, 13)


def test_rate_limit_fault_answers_like_zitadel(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """ZITADEL's own 429: code 8 QUOTA-vjAy8, the exhausted cookie, and no Retry-After."""
    emu.set_fault(Fault.rate_limited(times=2))

    answers = [change(client, V2, ALICE) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    limited = answers[0]
    assert "retry-after" not in limited.headers
    assert limited.json() == {"code": 8, "message": "Quota.Access.Exhausted (QUOTA-vjAy8)",
                              "details": [{"@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                                           "id": "QUOTA-vjAy8",
                                           "message": "Quota.Access.Exhausted"}]}  # fmt: skip
    cookie = limited.headers["set-cookie"]
    assert cookie.startswith("zitadel.quota.exhausted=true;")
    assert "Max-Age=300" in cookie
    assert "set-cookie" not in answers[2].headers or "Max-Age=0" in answers[2].headers["set-cookie"]


def test_proxy_rate_limit_fault_sends_retry_after(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """A proxy in front of ZITADEL answers 429 with Retry-After and a page of its own."""
    emu.set_fault(Fault.proxy_rate_limited(times=1, retry_after=7))

    limited, passed = change(client, V2, ALICE), change(client, V2, ALICE)

    assert (limited.status_code, passed.status_code) == (429, 200)
    assert limited.headers["retry-after"] == "7"
    assert not limited.headers["content-type"].startswith("application/json")
    assert "zitadel.quota.exhausted" not in limited.headers.get("set-cookie", "")


def test_dropped_connection_is_a_transport_error(
    emu: ZitadelEmulator, client: httpx.Client
) -> None:
    """A dropped connection raises an httpx transport error and leaves the user untouched."""
    emu.set_fault(Fault.drop_connection(times=1))

    with pytest.raises(httpx.TransportError):
        change(client, V2, ALICE)

    assert emu.state_of(ALICE) is UserState.ACTIVE
    assert change(client, V2, ALICE).status_code == 200
    assert [c.status for c in emu.lock_calls(ALICE)] == [None, 200]


def test_path_filter_limits_a_fault(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """A fault with ``path_contains`` only hits matching requests and lasts until cleared."""
    emu.set_fault(Fault.status(503), path_contains="/lock")

    assert get_user(client, V2, ALICE).status_code == 200
    assert [change(client, V2, ALICE).status_code for _ in range(3)] == [503, 503, 503]
    emu.clear_faults()
    assert change(client, V2, ALICE).status_code == 200


# -- call recording -------------------------------------------------------------------------------


def test_calls_are_recorded_in_order(emu: ZitadelEmulator, client: httpx.Client) -> None:
    """Every request is recorded with method, raw path, lower-case headers, body and status."""
    change(client, V1, ALICE)
    get_user(client, V2, BOB)
    change(client, V2, BOB)

    calls = emu.calls

    assert [(c.method, c.path, c.status) for c in calls] == [
        ("POST", f"/management/v1/users/{ALICE}/_lock", 200),
        ("GET", f"/v2/users/{BOB}", 200),
        ("POST", f"/v2/users/{BOB}/lock", 200),
    ]
    assert calls[0].headers["authorization"] == f"Bearer {IAM_PAT}"
    assert calls[0].headers["x-zitadel-orgid"] == ORG_A
    assert calls[0].body == {}
    assert calls[0].at <= calls[1].at <= calls[2].at
    assert [c.user_id for c in emu.lock_calls()] == [ALICE, BOB]
    assert [c.path for c in emu.lock_calls(BOB)] == [f"/v2/users/{BOB}/lock"]

    emu.reset_calls()

    assert emu.calls == []


async def test_async_clients_reach_the_emulator(emu: ZitadelEmulator) -> None:
    """An asyncio test talks to the emulator, whose loop runs in its own thread."""
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        response = await http.post(
            f"/v2/users/{ALICE}/lock", json={}, headers=_headers(IAM_PAT, None)
        )

    assert response.status_code == 200


# -- the contract's shape -------------------------------------------------------------------------


def test_catalogue_ids_are_unique_and_statuses_follow_the_gateway() -> None:
    """Every catalogue ID appears once and FAILED_PRECONDITION maps to 400."""
    ids = [row.id for row in CATALOGUE if row.id]

    assert len(ids) == len(set(ids))
    assert {row.status for row in CATALOGUE if row.code == 9} == {400}


# ZITADEL's OpenAPI for the paths lockoutd uses (see docs/reference/ for where it comes from).
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "reference" / "zitadel-openapi-subset.json"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI.read_text())
    return loaded


def _resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].removeprefix("#/definitions/")]
    return schema


def _conform(spec: Mapping[str, Any], value: Any, schema: Mapping[str, Any], where: str) -> None:
    """Fail unless ``value`` fits ``schema``: known keys only, right types, enum names."""
    schema = _resolve(spec, schema)
    kind = schema.get("type", "object")
    if kind == "object":
        assert isinstance(value, dict), where
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key not in properties:
                assert "additionalProperties" in schema, f"{where}.{key} is not in the schema"
                continue
            _conform(spec, item, properties[key], f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            _conform(spec, item, schema["items"], f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), where
        if "enum" in schema:
            assert value in schema["enum"], where
        if schema.get("format") == "uint64":
            assert value.isdigit(), where
        if schema.get("format") == "date-time":
            assert datetime.fromisoformat(value).tzinfo is not None, where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind == "integer":
        assert isinstance(value, int), where


# One successful request for every served path of the subset, in an order that makes each succeed.
_OPENAPI_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("get", "/management/v1/users/{id}", {}),
    ("post", "/management/v1/users/_search", {"json": _login_query("alice@acme.example")}),
    (
        "get",
        "/management/v1/global/users/_by_login_name",
        {"params": {"loginName": "bob@globex.example"}},
    ),
    ("post", "/management/v1/users/{id}/_lock", {"json": {}}),
    ("post", "/management/v1/users/{id}/_unlock", {"json": {}}),
    ("get", "/v2/users/{userId}", {}),
    ("post", "/v2/users", {"json": _login_query("alice@acme.example")}),
    ("post", "/v2/users/{userId}/lock", {"json": {}}),
    ("post", "/v2/users/{userId}/unlock", {"json": {}}),
    ("post", "/v2beta/users/{userId}/lock", {"json": {}}),
    ("post", "/v2beta/users/{userId}/unlock", {"json": {}}),
    ("post", "/auth/v1/permissions/zitadel/me/_search", {}),
]


def test_answers_conform_to_the_openapi_subset(
    openapi: dict[str, Any], client: httpx.Client
) -> None:
    """Each served operation's 200 body, and an error body, fit the OpenAPI subset's schemas."""
    served = {(method, path) for method, path, _ in _OPENAPI_CALLS}
    in_subset = {(m, p) for p, ops in openapi["paths"].items() for m in ops if m in ("get", "post")}
    assert served == in_subset

    for method, template, kwargs in _OPENAPI_CALLS:
        path = template.replace("{id}", ALICE).replace("{userId}", ALICE)
        response = client.request(method, path, headers=_headers(IAM_PAT, ORG_A), **kwargs)
        assert response.status_code == 200, (template, response.text)
        schema = openapi["paths"][template][method]["responses"]["200"]["schema"]
        properties = _resolve(openapi, schema)["properties"]
        assert set(response.json()) <= set(properties), template
        _conform(openapi, response.json(), schema, f"{method.upper()} {template}")

    error = change(client, V2, NOBODY)
    _conform(openapi, error.json(), {"$ref": "#/definitions/rpcStatus"}, "rpcStatus")


# -- the Auth API: who the caller is and what it may do -----------------------------------------


def test_users_me_answers_the_callers_own_user(client: httpx.Client) -> None:
    response = client.get("/auth/v1/users/me", headers=_headers(ORG_PAT, None))
    assert response.status_code == 200
    user = response.json()["user"]
    assert user["id"] == ORG_SA
    assert user["details"]["resourceOwner"] == ORG_A
    assert user["preferredLoginName"]
    assert "machine" in user


def test_users_me_with_a_bad_token_is_unauthenticated(client: httpx.Client) -> None:
    response = client.get("/auth/v1/users/me", headers=_headers("no-such-token", None))
    assert response.status_code == 401
    assert response.json()["details"][0]["id"] == "AUTH-7fs1e"


def test_my_memberships_list_scopes_and_roles(client: httpx.Client) -> None:
    iam = client.post("/auth/v1/memberships/me/_search", json={}, headers=_headers(IAM_PAT, None))
    org = client.post("/auth/v1/memberships/me/_search", json={}, headers=_headers(ORG_PAT, None))
    none = client.post("/auth/v1/memberships/me/_search", json={}, headers=_headers(NONE_PAT, None))
    assert [(m.get("iam"), m["roles"]) for m in iam.json()["result"]] == [
        (True, ["IAM_USER_MANAGER"])
    ]
    assert [(m.get("orgId"), m["roles"]) for m in org.json()["result"]] == [
        (ORG_A, ["ORG_USER_MANAGER"])
    ]
    assert "result" not in none.json()  # protojson omits an empty list


def test_my_zitadel_permissions_are_those_of_the_context_org(client: httpx.Client) -> None:
    def permissions(token: str, org: str | None) -> list[str]:
        path = "/auth/v1/permissions/zitadel/me/_search"
        response = client.post(path, json={}, headers=_headers(token, org))
        assert response.status_code == 200
        result: list[str] = response.json().get("result", [])
        return result

    assert {"user.read", "user.write", "user.global.read"} <= set(permissions(IAM_PAT, None))
    assert {"user.read", "user.write"} <= set(permissions(ORG_PAT, None))
    assert permissions(ORG_PAT, ORG_B) == []
    assert "user.write" not in permissions(VIEWER_PAT, None)
    assert permissions(NONE_PAT, None) == []
