"""The signature seam: who must sign, what the signatures cover, and the accept-all checker."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.matrix.canonical_json import encode_canonical_json
from pipeline.matrix.pdu import parse_pdu
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.signing import NullSignatureChecker, required_signers, signed_bytes
from tests.unit.matrix.pdu_factory import make_pdu

_MEMBER_3PID = {
    "type": "m.room.member",
    "sender": "@inviter:a.example",
    "state_key": "@invitee:b.example",
    "content": {"membership": "invite", "third_party_invite": {"signed": {}}},
}
_VIA = {"join_authorised_via_users_server": "@mod:c.example"}
_RESTRICTED_JOIN = {
    "type": "m.room.member",
    "sender": "@joiner:a.example",
    "state_key": "@joiner:a.example",
    "content": {"membership": "join", **_VIA},
}


@pytest.mark.parametrize(
    ("version", "pdu", "expected"),
    [
        # "only the signature(s) from the originating server ... are required" (v3+).
        ("3", {"sender": "@a:one.example", "event_id": "$x:two.example"}, {"one.example"}),
        ("12", {"sender": "@a:one.example"}, {"one.example"}),
        # "Room versions 1 and 2 also require ... a signature ... from the domain in the event_id".
        (
            "1",
            {"sender": "@a:one.example", "event_id": "$x:two.example"},
            {"one.example", "two.example"},
        ),
        ("2", {"sender": "@a:one.example", "event_id": "$x:one.example"}, {"one.example"}),
        # A third-party invite may be sent by another server than the sender's.
        ("10", _MEMBER_3PID, set()),
        ("10", {**_MEMBER_3PID, "content": {"membership": "invite"}}, {"a.example"}),
        # v8+: a join authorised by another server's user must carry that server's signature.
        ("8", _RESTRICTED_JOIN, {"a.example", "c.example"}),
        ("7", _RESTRICTED_JOIN, {"a.example"}),
        ("8", {**_RESTRICTED_JOIN, "content": {"membership": "leave", **_VIA}}, {"a.example"}),
    ],
)
def test_required_signers_follow_the_room_version(
    version: str, pdu: dict[str, Any], expected: set[str]
) -> None:
    assert required_signers(pdu, room_version(version)) == expected


@pytest.mark.parametrize("version", ["1", "5", "11", "12"])
def test_signatures_cover_the_redacted_event_without_signatures_and_unsigned(version: str) -> None:
    rv = room_version(version)
    pdu = make_pdu(rv)
    covered = signed_bytes(pdu, rv)
    expected = {k: v for k, v in redact(pdu, rv).items() if k not in ("signatures", "unsigned")}
    assert covered == encode_canonical_json(expected)
    # "this step should succeed whether we have been sent the full event or a redacted copy"
    assert signed_bytes(redact(pdu, rv), rv) == covered


def test_null_signature_checker_accepts_every_event() -> None:
    rv = room_version("12")
    assert NullSignatureChecker().check(parse_pdu(make_pdu(rv), rv)) is None
