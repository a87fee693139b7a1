"""Sans-I/O MLLP decoder (standards.md §2.5): every framing case, table-driven."""

from __future__ import annotations

import pytest

from hl7.mllp import (
    END_BLOCK,
    HEAD_SIZE,
    START_BLOCK,
    Discarded,
    Event,
    Frame,
    FrameDecoder,
    Oversize,
    frame,
)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
MSG_A = b"MSH|^~\\&|A|||||ORM^O01|1|P|2.3.1\rPID|1\r"
MSG_B = b"MSH|^~\\&|B|||||ORM^O01|2|P|2.3.1\r"
MSG_C = b"MSH|^~\\&|C|||||ORM^O01|3|P|2.3.1\r"


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Event]:
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_frame_wraps_payload() -> None:
    assert frame(b"abc") == START_BLOCK + b"abc" + END_BLOCK == b"\x0babc\x1c\x0d"


CASES: list[tuple[str, list[bytes], list[Event], bool]] = [
    # id, chunks fed, events expected, pending afterwards
    ("one frame", [frame(MSG_A)], [Frame(MSG_A)], False),
    ("empty frame", [VT + FS + CR], [Frame(b"")], False),
    ("partial frame", [VT + MSG_A[:10]], [], True),
    ("partial across feeds", [VT + MSG_A[:10], MSG_A[10:] + FS + CR], [Frame(MSG_A)], False),
    ("several in one feed", [frame(MSG_A) + frame(MSG_B)], [Frame(MSG_A), Frame(MSG_B)], False),
    (
        "second frame partial",
        [frame(MSG_A) + VT + MSG_B[:5]],
        [Frame(MSG_A)],
        True,
    ),
    ("end block split", [VT + MSG_A + FS, CR], [Frame(MSG_A)], False),
    (
        "end block split, next frame follows",
        [VT + MSG_A + FS, CR + frame(MSG_B)],
        [Frame(MSG_A), Frame(MSG_B)],
        False,
    ),
    (
        "FS without CR ends the frame",
        [VT + MSG_A + FS + frame(MSG_B)],
        [Frame(MSG_A), Frame(MSG_B)],
        False,
    ),
    (
        "FS without CR, then stray byte",
        [VT + MSG_A + FS + b"x" + frame(MSG_B)],
        [Frame(MSG_A), Discarded(b"x"), Frame(MSG_B)],
        False,
    ),
    (
        "FS at end of feed, next feed starts a frame",
        [VT + MSG_A + FS, frame(MSG_B)],
        [Frame(MSG_A), Frame(MSG_B)],
        False,
    ),
    (
        "bytes before start",
        [b"junk\r\n" + frame(MSG_A)],
        [Discarded(b"junk\r\n"), Frame(MSG_A)],
        False,
    ),
    ("garbage only", [b"GET / HTTP/1.0\r\n\r\n"], [Discarded(b"GET / HTTP/1.0\r\n\r\n")], False),
    (
        "bytes between frames",
        [frame(MSG_A) + b"\n" + frame(MSG_B)],
        [Frame(MSG_A), Discarded(b"\n"), Frame(MSG_B)],
        False,
    ),
    (
        "stray end block outside",
        [END_BLOCK + frame(MSG_A)],
        [Discarded(END_BLOCK), Frame(MSG_A)],
        False,
    ),
    (
        "new start inside a frame",
        [VT + b"partial" + frame(MSG_A)],
        [Discarded(b"partial"), Frame(MSG_A)],
        False,
    ),
    (
        "new start inside a frame, across feeds",
        [VT + b"part", b"ial" + VT + MSG_A, FS + CR],
        [Discarded(b"partial"), Frame(MSG_A)],
        False,
    ),
    (
        "several start blocks in a row",
        [VT + VT + b"x" + VT + MSG_A + FS + CR],
        [Discarded(VT + b"x"), Frame(MSG_A)],
        False,
    ),
]


@pytest.mark.parametrize(
    ("chunks", "expected", "pending"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decoder(chunks: list[bytes], expected: list[Event], pending: bool) -> None:
    decoder = FrameDecoder()
    assert feed_all(decoder, chunks) == expected
    assert decoder.pending is pending


OVERSIZE_CASES: list[tuple[str, int, int]] = [
    # id, max_frame_size, payload size
    ("exactly the limit is a frame", 100, 100),
    ("one over the limit", 100, 101),
    ("limit below head size", 100, 10_000),
    ("limit above head size", 5000, 20_000),
]


@pytest.mark.parametrize(
    ("limit", "size"), [c[1:] for c in OVERSIZE_CASES], ids=[c[0] for c in OVERSIZE_CASES]
)
@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20], ids=["chunk7", "chunk1000", "whole"])
def test_oversize(limit: int, size: int, chunk: int) -> None:
    payload = bytes(32 + i % 90 for i in range(size))  # printable: no VT/FS inside
    stream = frame(payload) + frame(MSG_B)
    decoder = FrameDecoder(max_frame_size=limit)
    events = feed_all(decoder, [stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    first = Frame(payload) if size <= limit else Oversize(payload[:HEAD_SIZE], size)
    assert events == [first, Frame(MSG_B)]
    assert not decoder.pending


def test_oversize_partial_abandoned_by_new_start() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    events = feed_all(decoder, [VT + b"x" * 5000, b"y" * 5000 + frame(MSG_A)])
    assert events == [Discarded(b"x" * HEAD_SIZE), Frame(MSG_A)]


def test_byte_by_byte_three_frames() -> None:
    stream = b"noise" + frame(MSG_A) + frame(MSG_B) + VT + MSG_C + FS  # last one without CR
    decoder = FrameDecoder()
    events = feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    assert events == [
        Discarded(b"n"),
        Discarded(b"o"),
        Discarded(b"i"),
        Discarded(b"s"),
        Discarded(b"e"),
        Frame(MSG_A),
        Frame(MSG_B),
        Frame(MSG_C),
    ]
    assert not decoder.pending


def test_pending_and_reset() -> None:
    decoder = FrameDecoder()
    assert not decoder.pending
    assert decoder.feed(VT + b"half") == []
    assert decoder.pending
    decoder.reset()
    assert not decoder.pending
    assert decoder.feed(b"rest" + FS + CR + frame(MSG_A)) == [
        Discarded(b"rest" + FS + CR),
        Frame(MSG_A),
    ]


def test_reset_forgets_pending_cr() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(VT + MSG_A + FS) == [Frame(MSG_A)]
    decoder.reset()
    assert decoder.feed(CR) == [Discarded(CR)]


def test_bytearray_input() -> None:
    assert FrameDecoder().feed(bytearray(frame(MSG_A))) == [Frame(MSG_A)]


def test_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=0)


def test_large_stream_is_linear() -> None:
    # 2,000 frames in one feed plus one 8 MiB oversize frame fed in 1 KiB chunks: a quadratic
    # re-scan would take minutes here, linear decoding takes well under a second.
    many = b"".join(frame(MSG_A) for _ in range(2000))
    assert FrameDecoder().feed(many) == [Frame(MSG_A)] * 2000
    big = frame(b"z" * (8 << 20))
    decoder = FrameDecoder(max_frame_size=1 << 20)
    events = feed_all(decoder, [big[i : i + 1024] for i in range(0, len(big), 1024)])
    assert events == [Oversize(b"z" * HEAD_SIZE, 8 << 20)]
