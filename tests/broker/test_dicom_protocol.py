"""The DICOM listener against a requestor written byte by byte on a loopback socket: what a
pynetdicom SCU never sends (PDUs out of order, unknown PDUs, PDVs on contexts that were not
accepted, requests the SCP does not perform), the timeouts, and release while a C-FIND runs.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from bench.dimse_scu import associate_rq
from broker.config import DicomConfig
from broker.dicom import MODALITY_WORKLIST_FIND, VERIFICATION, DicomServer
from broker.dicom.dimse import (
    C_ECHO_RQ,
    C_FIND_RQ,
    N_CREATE_RQ,
    Command,
    MessageAssembler,
    encode_command,
)
from broker.dicom.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_RELEASE_RP,
    COMMAND_BIT,
    P_DATA_TF,
    PduReader,
    iter_pdvs,
    message_pdus,
)
from mwl.policy import WorklistPolicy
from tests.mwl.test_scp import FakeFinder, broad_query, items

TIMEOUT = 20.0
C_STORE_RQ = 0x0001


@contextmanager
def serving(finder: FakeFinder | None = None, **dicom: Any) -> Iterator[DicomServer]:
    server = DicomServer(DicomConfig(port=0, **dicom), finder or FakeFinder(items(2)),
                         WorklistPolicy())  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=TIMEOUT)


class Peer:
    """A requestor's end of the connection, PDU by PDU."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.reader = PduReader(0)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pdu(self) -> tuple[int, bytes] | None:
        """The next PDU, or None once the server has closed the connection."""
        while (pdu := self.reader.next_pdu()) is None:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.reader.feed(data)
        return pdu

    def associate(self, abstract_syntax: str = VERIFICATION) -> None:
        self.send(associate_rq("CT1", "MWLBROKER", abstract_syntax, ImplicitVRLittleEndian, 0))
        answer = self.pdu()
        assert answer is not None and answer[0] == A_ASSOCIATE_AC

    def request(self, command: bytes, data: bytes | None = None, context_id: int = 1) -> None:
        parts = [(COMMAND_BIT, command)] + ([] if data is None else [(0, data)])
        self.send(b"".join(message_pdus(context_id, parts, 0)))

    def response(self) -> Command:
        assembler = MessageAssembler()
        while True:
            pdu = self.pdu()
            assert pdu is not None and pdu[0] == P_DATA_TF, pdu
            for context_id, control, fragment in iter_pdvs(pdu[1]):
                message = assembler.add(context_id, control, fragment)
                if message is not None:
                    return message.command

    def close(self) -> None:
        self.sock.close()


@contextmanager
def peer(port: int) -> Iterator[Peer]:
    connection = Peer(port)
    try:
        yield connection
    finally:
        connection.close()


def command(
    field: int, message_id: int, sop_class: str, *, data_set: bool = False, instance: str = ""
) -> bytes:
    """A request's command set; ``instance`` as (0000,1000) for N-CREATE, else (0000,1001)."""
    elements = [
        _ui(0x0002, sop_class),
        struct.pack("<HHLH", 0, 0x0100, 2, field),
        struct.pack("<HHLH", 0, 0x0110, 2, message_id),
        struct.pack("<HHLH", 0, 0x0800, 2, 0x0001 if data_set else 0x0101),
    ]
    if instance:
        elements.append(_ui(0x1000 if field == N_CREATE_RQ else 0x1001, instance))
    return encode_command(elements)


def _ui(element: int, uid: str) -> bytes:
    raw = uid.encode() + b"\0" * (len(uid) % 2)
    return struct.pack("<HHL", 0, element, len(raw)) + raw


def abort_of(pdu: tuple[int, bytes] | None) -> tuple[int, int]:
    """(source, reason) of an A-ABORT PDU."""
    assert pdu is not None and pdu[0] == A_ABORT, pdu
    return pdu[1][8], pdu[1][9]


def test_a_p_data_before_the_association_request_is_aborted_unexpected_pdu() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.send(b"".join(message_pdus(1, [(COMMAND_BIT, b"\0" * 12)], 0)))

        assert abort_of(scu.pdu()) == (0x02, 0x02)
        assert scu.pdu() is None


def test_an_unknown_pdu_type_is_aborted_unrecognized_pdu() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate()
        scu.send(b"\x09\x00\x00\x00\x00\x04abcd")

        assert abort_of(scu.pdu()) == (0x02, 0x01)
        assert scu.pdu() is None
    assert server.associations == 0


def test_a_pdv_on_a_context_that_was_not_accepted_is_aborted() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate()
        scu.request(command(C_ECHO_RQ, 1, VERIFICATION), context_id=3)

        assert abort_of(scu.pdu()) == (0x02, 0x06)


def without_transfer_syntax(request: bytes) -> bytes:
    """An A-ASSOCIATE-RQ whose presentation context lost its Transfer Syntax sub-item."""
    syntax = ImplicitVRLittleEndian.encode()
    item = struct.pack(">BxH", 0x40, len(syntax)) + syntax
    at = request.index(item)
    context = request.rindex(b"\x20\x00", 0, at)  # the Presentation Context item around it
    (context_length,) = struct.unpack_from(">H", request, context + 2)
    body = bytearray(request[:at] + request[at + len(item) :])
    struct.pack_into(">H", body, context + 2, context_length - len(item))
    struct.pack_into(">L", body, 2, len(body) - 6)
    return bytes(body)


def test_a_presentation_context_without_transfer_syntax_is_aborted() -> None:
    request = associate_rq("CT1", "MWLBROKER", VERIFICATION, ImplicitVRLittleEndian, 0)
    with serving() as server, peer(server.port) as scu:
        scu.send(without_transfer_syntax(request))

        assert abort_of(scu.pdu()) == (0x02, 0x06)
        assert scu.pdu() is None


def test_a_request_the_scp_does_not_perform_gets_0211_and_the_association_goes_on() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate()
        scu.request(
            command(C_STORE_RQ, 5, VERIFICATION, data_set=True), b"\x08\x00\x50\x00\0\0\0\0"
        )
        refused = scu.response()
        scu.request(command(C_ECHO_RQ, 6, VERIFICATION))
        echoed = scu.response()

    assert (refused.field, refused.unsigned(0x0120), refused.unsigned(0x0900)) == (
        0x8001,
        5,
        0x0211,
    )
    assert refused.elements[0x0902].strip() == b"command 0x0001 not performed here"
    assert (echoed.field, echoed.unsigned(0x0900)) == (0x8030, 0x0000)


def test_a_command_of_another_sop_class_than_its_context_gets_0122() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate()
        scu.request(command(C_ECHO_RQ, 2, MODALITY_WORKLIST_FIND))
        response = scu.response()

    assert (response.field, response.unsigned(0x0900)) == (0x8030, 0x0122)


def test_a_connection_without_an_association_request_is_closed_after_the_acse_timeout() -> None:
    with serving(acse_timeout=0.3) as server, peer(server.port) as scu:
        started = time.monotonic()
        assert scu.pdu() is None
        assert time.monotonic() - started >= 0.3


def test_a_silent_requestor_is_aborted_after_the_network_timeout() -> None:
    with serving(network_timeout=0.3) as server, peer(server.port) as scu:
        scu.associate()

        assert abort_of(scu.pdu()) == (0x02, 0x00)
        assert scu.pdu() is None


def test_a_release_is_answered_and_the_connection_closed() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate()
        scu.send(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")

        release = scu.pdu()
        assert release is not None and release[0] == A_RELEASE_RP
        assert scu.pdu() is None


def test_a_release_sent_behind_a_c_find_is_answered_after_its_final_response() -> None:
    identifier = encode_identifier()
    with serving(FakeFinder(items(3))) as server, peer(server.port) as scu:
        scu.associate(MODALITY_WORKLIST_FIND)
        request = command(C_FIND_RQ, 9, MODALITY_WORKLIST_FIND, data_set=True)
        parts = [(COMMAND_BIT, request), (0, identifier)]
        release = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
        scu.send(b"".join(message_pdus(1, parts, 0)) + release)  # one segment: both at once

        statuses = [scu.response().unsigned(0x0900) for _ in range(4)]
        last = scu.pdu()

    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert last is not None and last[0] == A_RELEASE_RP


def encode_identifier() -> bytes:
    data = encode(broad_query(), True, True)
    assert data is not None
    return data


@pytest.mark.parametrize("maximum", [0, 16382, 64, 7 + 6])
def test_a_message_is_its_pdvs_in_pdus_within_the_peers_maximum(maximum: int) -> None:
    command_set, data = b"c" * 40, bytes(range(256)) * 3

    pdus = message_pdus(3, [(COMMAND_BIT, command_set), (0, data)], maximum)

    pdvs = [pdv for pdu in pdus for pdv in iter_pdvs(pdu)]
    assert {context for context, _, _ in pdvs} == {3}
    assert b"".join(f for _, control, f in pdvs if control & COMMAND_BIT) == command_set
    assert b"".join(f for _, control, f in pdvs if not control & COMMAND_BIT) == data
    controls = [control for _, control, _ in pdvs]
    assert controls.count(0x03) == 1 and controls.count(0x02) == 1 and controls[-1] == 0x02
    assert controls.index(0x03) < controls.index(0x02)  # the command set comes first
    if maximum:
        assert all(len(pdu) - 6 <= maximum for pdu in pdus)
    else:
        assert len(pdus) == 1


def test_a_maximum_too_small_for_any_data_still_sends_every_byte() -> None:
    pdus = message_pdus(1, [(COMMAND_BIT, b"abc")], 4)

    assert b"".join(fragment for pdu in pdus for _, _, fragment in iter_pdvs(pdu)) == b"abc"


def test_command_and_data_share_a_pdu_when_they_fit() -> None:
    (pdu,) = message_pdus(1, [(COMMAND_BIT, b"c" * 10), (0, b"d" * 10)], 16382)

    assert [control for _, control, _ in iter_pdvs(pdu)] == [0x03, 0x02]


def test_a_message_left_half_sent_is_aborted_after_the_dimse_timeout() -> None:
    with serving(dimse_timeout=0.3, network_timeout=TIMEOUT) as server, peer(server.port) as scu:
        scu.associate()
        first_half = command(C_ECHO_RQ, 1, VERIFICATION)[:20]  # a command fragment, not the last
        scu.send(struct.pack(">BxLLBB", P_DATA_TF, 26, 22, 1, COMMAND_BIT) + first_half)
        started = time.monotonic()

        assert abort_of(scu.pdu()) == (0x02, 0x00)
        assert TIMEOUT > time.monotonic() - started >= 0.3


def test_a_c_find_without_an_identifier_is_refused_a900() -> None:
    with serving() as server, peer(server.port) as scu:
        scu.associate(MODALITY_WORKLIST_FIND)
        scu.request(command(C_FIND_RQ, 4, MODALITY_WORKLIST_FIND))
        response = scu.response()

    assert (response.field, response.unsigned(0x0900)) == (0x8020, 0xA900)
    assert response.elements[0x0902].strip() == b"C-FIND-RQ without an identifier"


def test_the_listener_serves_ipv6_loopback() -> None:
    with serving(host="::1") as server:
        scu = Peer(server.port, host="::1")
        try:
            scu.associate()
            scu.request(command(C_ECHO_RQ, 1, VERIFICATION))
            assert scu.response().unsigned(0x0900) == 0x0000
        finally:
            scu.close()


def garbage(rng: random.Random) -> bytes:
    """Bytes a broken or hostile requestor might send first: noise, a PDU header with a random
    body, or an A-ASSOCIATE-RQ cut short or with bytes flipped (its lengths included)."""
    request = associate_rq("CT1", "MWLBROKER", VERIFICATION, ImplicitVRLittleEndian, 16384)
    match rng.randrange(4):
        case 0:
            return rng.randbytes(rng.randrange(1, 400))
        case 1:
            body = rng.randbytes(rng.randrange(0, 300))
            return struct.pack(">BxL", rng.randrange(1, 8), len(body)) + body
        case 2:
            return request[: rng.randrange(1, len(request))]
        case _:
            flipped = bytearray(request)
            for _ in range(rng.randrange(1, 6)):
                flipped[rng.randrange(6, len(flipped))] = rng.randrange(256)
            return bytes(flipped)


def test_the_listener_answers_garbage_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    """Each connection gets an A-ASSOCIATE-AC or -RJ, an A-ABORT or a close; none stays open,
    none meets a defect, and a well-formed association works afterwards (the process never
    dies on input)."""
    caplog.set_level(logging.ERROR, logger="broker.dicom")
    rng = random.Random(20261127)
    answers: set[int | None] = set()
    with serving(acse_timeout=2.0, network_timeout=2.0) as server:
        for _ in range(1000):
            with peer(server.port) as scu:
                scu.send(garbage(rng))
                scu.sock.shutdown(socket.SHUT_WR)
                first = scu.pdu()
                answers.add(first[0] if first is not None else None)
                while scu.pdu() is not None:  # the server closes the connection
                    pass
        with peer(server.port) as scu:
            scu.associate()
            scu.request(command(C_ECHO_RQ, 1, VERIFICATION))
            assert scu.response().unsigned(0x0900) == 0x0000

    assert not [r for r in caplog.records if r.name == "broker.dicom"], caplog.text
    assert answers <= {A_ASSOCIATE_AC, 0x03, A_ABORT, None}
    assert {0x03, A_ABORT} <= answers  # some were refused, some aborted
    assert server.associations == 0


def broken_request(rng: random.Random) -> bytes:
    """A P-DATA-TF on the accepted context 1 that a broken SCU might send: a C-ECHO or C-FIND
    command set cut, corrupted or with a random data set behind it, or random PDV bytes."""
    find = command(C_FIND_RQ, rng.randrange(1, 9), MODALITY_WORKLIST_FIND, data_set=True)
    echo = command(C_ECHO_RQ, rng.randrange(1, 9), VERIFICATION)
    chosen = bytearray(rng.choice([find, echo]))
    match rng.randrange(4):
        case 0:
            parts = [(COMMAND_BIT, bytes(chosen[: rng.randrange(1, len(chosen))]))]
        case 1:
            for _ in range(rng.randrange(1, 4)):
                chosen[rng.randrange(len(chosen))] = rng.randrange(256)
            parts = [(COMMAND_BIT, bytes(chosen))]
        case 2:
            parts = [(COMMAND_BIT, find), (0, rng.randbytes(rng.randrange(0, 200)))]
        case _:
            body = rng.randbytes(rng.randrange(2, 60))
            return struct.pack(">BxLLB", P_DATA_TF, len(body) + 5, len(body) + 1, 1) + body
    return b"".join(message_pdus(1, parts, 0))


def test_broken_requests_are_answered_or_aborted_never_a_defect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the association, whatever a P-DATA-TF holds: a response, an A-ABORT, or (for a
    message still incomplete) silence until the release; never an internal error."""
    caplog.set_level(logging.ERROR, logger="broker.dicom")
    rng = random.Random(1127)
    answers: set[int | None] = set()
    with serving(dimse_timeout=2.0, network_timeout=2.0) as server:
        for _ in range(300):
            with peer(server.port) as scu:
                scu.associate(MODALITY_WORKLIST_FIND)
                scu.send(broken_request(rng))
                scu.sock.shutdown(socket.SHUT_WR)  # then EOF: the server ends it
                while (pdu := scu.pdu()) is not None:
                    answers.add(pdu[0])

    assert not [r for r in caplog.records if r.name == "broker.dicom"], caplog.text
    assert answers <= {P_DATA_TF, A_ABORT}
    assert answers == {P_DATA_TF, A_ABORT}  # some were answered, some aborted
    assert server.associations == 0
