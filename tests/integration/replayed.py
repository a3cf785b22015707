"""What the workers' chunks should say: the rooms of the offline replay of the same input."""

from __future__ import annotations

from pipeline.room.replay import replay
from tests.integration.harness import Process, TopicReader, fold_chunks, wait_for


def expected_rooms(lines: list[bytes]) -> dict[str, dict[str, object]]:
    out = replay(lines)
    return {
        room: {k: v for k, v in view.items() if k != "parked"}
        for room, view in out["rooms"].items()
    }


def valid_event_ids(lines: list[bytes]) -> set[str]:
    out = replay(lines, state_after=True)
    ids: set[str] = set()
    for view in out["rooms"].values():
        ids |= set(view["state_after"]) | set(view["rejected"])
    return ids


def events_in(chunks: TopicReader) -> set[str]:
    rooms, _ = fold_chunks(m.value() for m in chunks.messages)
    return {e for view in rooms.values() for e in view.events}


def assert_matches_replay(chunks: TopicReader, lines: list[bytes]) -> None:
    rooms, _ = fold_chunks(m.value() for m in chunks.messages)
    expected = expected_rooms(lines)
    assert {r: v.as_replay() for r, v in rooms.items()} == expected


def assert_all_processed_as_replayed(
    chunks: TopicReader,
    lines: list[bytes],
    *,
    within: float,
    what: str,
    processes: list[Process],
    settle: float,
) -> None:
    """Wait until every valid event of ``lines`` is in a chunk, read what else comes for
    ``settle`` seconds, and compare the rooms the chunks make with the offline replay."""
    want = valid_event_ids(lines)
    wait_for(
        lambda: events_in(chunks) >= want,
        within,
        what,
        readers=[chunks],
        processes=processes,
    )
    chunks.poll(settle)
    assert_matches_replay(chunks, lines)
