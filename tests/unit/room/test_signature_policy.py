"""Signature checks in the room processor: an event whose signatures fail is dropped to the
dead-letter topic with the server and key named; with checks off (no checker) nothing is checked."""

from __future__ import annotations

from typing import Any

from pipeline.matrix.signing import Ed25519SignatureChecker
from pipeline.room.batch import Incoming, ProcessorConfig
from pipeline.room.processor import RoomProcessor
from tests.unit.matrix.signing_keys import KeyTable, Server
from tests.unit.room.builder import ALICE, BOB, RoomBuilder

A, B = Server("a.example"), Server("b.example")
KEYS = KeyTable().add(A).add(B)


def _signed_room() -> RoomBuilder:
    b = RoomBuilder("10")
    b.base()
    b.message("M1", ALICE)
    b.message("M2", BOB)
    for name, pdu in b.pdus.items():
        server = A if pdu["sender"].endswith(":a.example") else B
        b.pdus[name] = server.sign(pdu, b.rv)
    return b


def _run(b: RoomBuilder, names: list[str], config: ProcessorConfig) -> tuple[list[str], list[Any]]:
    proc = RoomProcessor(b.room_id, config=config)
    result = proc.process([Incoming(b.raw(n), received_ts=i) for i, n in enumerate(names)])
    stored = [b.name_of(e.event_id) for c in result.chunks for e in c.events]
    return stored, list(result.dead_letters)


def test_signed_events_pass_and_the_room_is_as_without_checks() -> None:
    b = _signed_room()
    names = ["C", "MA", "PL", "JR", "MB", "M1", "M2"]
    on = _run(b, names, ProcessorConfig(signatures=Ed25519SignatureChecker(KEYS)))
    assert on == _run(b, names, ProcessorConfig()) == (names, [])


def test_an_event_whose_signature_fails_is_dead_lettered_naming_server_and_key() -> None:
    b = _signed_room()
    # M2 carries, as b.example's signature, a real signature of another event (M1's).
    other_signature = b.pdus["M1"]["signatures"]["a.example"]["ed25519:k1"]
    forged = {**b.pdus["M2"], "signatures": {"b.example": {"ed25519:k1": other_signature}}}
    b.pdus["M2"] = forged
    stored, letters = _run(
        b,
        ["C", "MA", "PL", "JR", "MB", "M1", "M2"],
        ProcessorConfig(signatures=Ed25519SignatureChecker(KEYS)),
    )
    assert stored == ["C", "MA", "PL", "JR", "MB", "M1"]
    (letter,) = letters
    assert letter.event_id == b.ids["M2"]
    assert "b.example" in letter.reason and "ed25519:k1" in letter.reason
    assert "does not verify" in letter.reason
    # With checks off the producers are trusted: the same input is stored.
    off, none = _run(b, ["C", "MA", "PL", "JR", "MB", "M1", "M2"], ProcessorConfig())
    assert off[-1] == "M2" and none == []


def test_input_that_waited_for_the_create_event_is_checked_when_it_goes_on() -> None:
    b = _signed_room()
    unsigned = {**b.pdus["M1"], "signatures": {}}
    b.pdus["M1"] = unsigned
    checker = Ed25519SignatureChecker(KEYS)
    stored, letters = _run(
        b, ["M1", "MA", "PL", "JR", "MB", "C"], ProcessorConfig(signatures=checker)
    )
    assert stored == ["C", "MA", "PL", "JR", "MB"]
    assert [dl.event_id for dl in letters] == [b.ids["M1"]]
    assert "not signed by it" in letters[0].reason
