"""MLLP framing, sans-I/O: bytes in, events out; never touches a socket.

A block is ``<VT> message <FS><CR>`` (0x0B … 0x1C 0x0D, standards.md §2.5, MLLP release 1).
:class:`FrameDecoder` turns a byte stream into :class:`Frame`, :class:`Oversize` and
:class:`Discarded` events, so partial frames, several frames in one read, stray bytes and
oversize frames are testable without a network; :mod:`hl7.server` and :mod:`hl7.client`
do the I/O.

The decoder is more tolerant than dcm4che's ``MLLPInputStream`` (which raises on a missing
start block and on 0x1C not followed by 0x0D, standards.md §2.5): it reports stray bytes as
:class:`Discarded` and ends a frame at 0x1C whatever follows, so one broken sender cannot wedge
a connection.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
HEAD_SIZE = 4096
"""How many leading bytes of an oversize frame :class:`Oversize` keeps (enough for MSH)."""

_VT = 0x0B
_FS = 0x1C
_CR = 0x0D


def frame(payload: bytes) -> bytes:
    """Wrap one HL7 message in an MLLP block: ``<VT> payload <FS><CR>`` (standards.md §2.5)."""
    return START_BLOCK + payload + END_BLOCK


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP block; ``payload`` is the message without the framing bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversize:
    """A block longer than ``max_frame_size``, skipped up to its end block.

    ``head`` holds its first :data:`HEAD_SIZE` bytes so the caller can still read MSH and
    answer AR; ``size`` is the payload length in bytes (framing excluded).
    """

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes that belong to no frame.

    Either bytes outside any block (before a start block, between blocks) or a partial block
    abandoned because a new start block arrived. For an abandoned partial that was already
    over the size limit, ``data`` holds only its first :data:`HEAD_SIZE` bytes.
    Callers log a warning with the byte count, never the content (patient data).
    """

    data: bytes


Event = Frame | Oversize | Discarded
_Bytes = bytes | bytearray


class FrameDecoder:
    """Incremental MLLP decoder (standards.md §2.5).

    Feed it bytes as they arrive; each :meth:`feed` returns the events completed by them.
    Work is linear in the bytes fed: every byte is scanned a bounded number of times.

    Tolerances (deliberate, see module docstring):

    - bytes outside a block are reported as :class:`Discarded`;
    - a start block inside an unfinished block abandons the partial block
      (:class:`Discarded`) and starts a new one;
    - a block ends at 0x1C; the 0x0D that should follow is consumed when it is the next
      byte (even in the next :meth:`feed`), and otherwise not required.

    Parameters
    ----------
    max_frame_size
        Largest payload accepted as a :class:`Frame`; longer blocks become :class:`Oversize`
        and are not buffered beyond their head.
    """

    def __init__(self, max_frame_size: int = 1 << 20) -> None:
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self._max_frame_size = max_frame_size
        self._buf = bytearray()
        self._size = 0
        self._inside = False
        self._expect_cr = False

    @property
    def pending(self) -> bool:
        """True while inside a block (start block seen, end block not yet)."""
        return self._inside

    def reset(self) -> None:
        """Forget any partial block and the state between blocks."""
        self._buf.clear()
        self._size = 0
        self._inside = False
        self._expect_cr = False

    def feed(self, data: bytes | bytearray) -> list[Event]:
        """Consume ``data`` and return the events it completes, in stream order."""
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            if self._expect_cr:
                self._expect_cr = False
                if data[pos] == _CR:
                    pos += 1
                    continue
            if self._inside:
                pos = self._feed_inside(data, view, pos, events)
            else:
                pos = self._feed_outside(data, view, pos, events)
        return events

    def _feed_outside(self, data: _Bytes, view: memoryview, pos: int, events: list[Event]) -> int:
        start = data.find(_VT, pos)
        stop = len(data) if start < 0 else start
        if stop > pos:
            events.append(Discarded(bytes(view[pos:stop])))
        if start < 0:
            return stop
        self._inside = True
        return start + 1

    def _feed_inside(self, data: _Bytes, view: memoryview, pos: int, events: list[Event]) -> int:
        end = data.find(_FS, pos)
        stop = len(data) if end < 0 else end
        restart = data.rfind(_VT, pos, stop)
        if restart >= 0:
            self._append(view[pos:restart])
            abandoned = self._take()
            if abandoned:
                events.append(Discarded(abandoned))
            self._inside = True
            pos = restart + 1
        self._append(view[pos:stop])
        if end < 0:
            return stop
        size = self._size
        payload = self._take()
        events.append(Frame(payload) if size <= self._max_frame_size else Oversize(payload, size))
        self._expect_cr = True
        return end + 1

    def _append(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        if self._size <= self._max_frame_size:
            self._buf += chunk
            return
        room = HEAD_SIZE - len(self._buf)
        if room > 0:
            self._buf += chunk[:room]
        del self._buf[HEAD_SIZE:]

    def _take(self) -> bytes:
        payload = bytes(self._buf)
        self._buf.clear()
        self._size = 0
        self._inside = False
        return payload
