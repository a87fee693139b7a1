"""bench.dimse_scu on real sockets: against pynetdicom's SCP on 127.0.0.1, and against a scripted
peer that checks the bytes with pynetdicom's PDU decoders and answers what pynetdicom never sends
(several PDVs in one PDU, A-ABORT, a wrong Message ID, silence)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF

from bench.dimse_scu import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MPPS_SOP_CLASS,
    AssociationAborted,
    AssociationRejected,
    DimseAssociation,
    DimseError,
    DimseTimeout,
    PresentationContextRejected,
    ProtocolError,
    encode_dataset,
)
from tests.mpps.datasets import completion, dataset, n_create, series_item

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
VERIFICATION = UID("1.2.840.10008.1.1")
WAIT = 5.0

Answer = tuple[int | Dataset, Dataset | None]


@dataclass
class Received:
    """One request as the SCP's handler saw it."""

    request: Any
    dataset: Dataset
    transfer_syntax: str


@dataclass
class Scp:
    """A pynetdicom MPPS SCP and what it saw; ``answers`` set what its handlers return."""

    port: int
    answers: dict[str, Answer] = field(default_factory=dict)
    created: list[Received] = field(default_factory=list)
    modified: list[Received] = field(default_factory=list)
    p_data_lengths: list[int] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)

    def on_create(self, event: Event) -> Answer:
        self.created.append(Received(event.request, event.attribute_list, _syntax(event)))
        return self.answers.get("create", (0x0000, None))

    def on_set(self, event: Event) -> Answer:
        self.modified.append(Received(event.request, event.modification_list, _syntax(event)))
        return self.answers.get("set", (0x0000, None))

    def on_pdu(self, event: Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            self.p_data_lengths.append(event.pdu.pdu_length)

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_N_CREATE, self.on_create),
            (evt.EVT_N_SET, self.on_set),
            (evt.EVT_PDU_RECV, self.on_pdu),
            (evt.EVT_RELEASED, lambda event: self.released.set()),
            (evt.EVT_ABORTED, lambda event: self.aborted.set()),
        ]


def _syntax(event: Event) -> str:
    return str(event.context.transfer_syntax)


StartScp = Callable[..., Scp]


@pytest.fixture
def start_scp() -> Iterator[StartScp]:
    """Start pynetdicom SCPs on 127.0.0.1, port 0; shut down after the test."""
    servers: list[Any] = []

    def start(
        sop_classes: Sequence[str] = (MPPS_SOP_CLASS,),
        syntaxes: Sequence[str] = tuple(SYNTAXES),
        maximum_pdu_size: int = 16382,
        require_called_aet: bool = False,
    ) -> Scp:
        ae = AE(ae_title="MWLBROKER")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, list(syntaxes))
        ae.maximum_pdu_size = maximum_pdu_size
        ae.require_called_aet = require_called_aet
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
        scp = Scp(port=0)
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=scp.handlers())
        assert server is not None and server.socket is not None
        servers.append(server)
        scp.port = server.socket.getsockname()[1]
        return scp

    yield start
    for server in servers:
        server.shutdown()


def associate(scp: Scp, **options: Any) -> DimseAssociation:
    values: dict[str, Any] = {"calling_ae": "CT", "called_ae": "MWLBROKER", "timeout": WAIT}
    return DimseAssociation.open("127.0.0.1", scp.port, **(values | options))


def decode(data: bytes | None, syntax: str) -> Dataset:
    assert data is not None
    return read_dataset(
        BytesIO(data), is_implicit_VR=UID(syntax).is_implicit_VR, is_little_endian=True
    )


def big_attribute_list() -> Dataset:
    """An N-CREATE attribute list of ~160 kB: a 100 kB OB value and 300 series items."""
    ds = n_create(
        PerformedSeriesSequence=[series_item(SeriesInstanceUID=f"1.2.3.{n}") for n in range(300)]
    )
    ds.EncapsulatedDocument = bytes(range(256)) * 390 + b"end!"  # 99,844 bytes, even
    return ds


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_n_create_and_n_set_arrive_exactly(start_scp: StartScp, syntax: str) -> None:
    scp = start_scp()
    uid = generate_uid()
    with associate(scp, transfer_syntax=syntax) as association:
        created = association.n_create(uid, n_create())
        completed = association.n_set(uid, completion())

    assert (created.status, created.dataset) == (0x0000, None)
    assert created.command.AffectedSOPInstanceUID == uid
    assert created.command.MessageIDBeingRespondedTo == 1
    assert (completed.status, completed.dataset) == (0x0000, None)
    assert completed.command.MessageIDBeingRespondedTo == 2
    [create] = scp.created
    assert create.transfer_syntax == syntax
    assert create.request.AffectedSOPClassUID == MPPS_SOP_CLASS
    assert create.request.AffectedSOPInstanceUID == uid
    assert create.request.MessageID == 1
    assert create.dataset == n_create()
    [modify] = scp.modified
    assert modify.request.RequestedSOPClassUID == MPPS_SOP_CLASS
    assert modify.request.RequestedSOPInstanceUID == uid
    assert modify.request.MessageID == 2
    assert modify.dataset == completion()


def test_message_ids_increase(start_scp: StartScp) -> None:
    scp = start_scp()
    with associate(scp) as association:
        for _ in range(3):
            association.n_create(generate_uid(), n_create())
    assert [received.request.MessageID for received in scp.created] == [1, 2, 3]


def test_pre_encoded_data_set_is_sent_as_is(start_scp: StartScp) -> None:
    scp = start_scp()
    with associate(scp, transfer_syntax=ImplicitVRLittleEndian) as association:
        data = encode_dataset(completion(), association.transfer_syntax)
        assert association.n_set(generate_uid(), data).status == 0x0000
    assert scp.modified[0].dataset == completion()


@pytest.mark.parametrize("operation", ["create", "set"])
def test_failure_status_and_error_comment_come_back(start_scp: StartScp, operation: str) -> None:
    scp = start_scp()
    status = Dataset()
    status.Status = 0x0110
    status.ErrorComment = "Performed Procedure Step is final"
    status.ErrorID = 0x0042
    scp.answers[operation] = (status, None)
    with associate(scp) as association:
        uid = generate_uid()
        if operation == "create":
            response = association.n_create(uid, n_create())
        else:
            response = association.n_set(uid, completion())

    assert response.status == 0x0110
    assert response.command.ErrorComment == "Performed Procedure Step is final"
    assert response.command.ErrorID == 0x0042
    assert response.dataset is None


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_response_data_set_is_returned(start_scp: StartScp, syntax: str) -> None:
    scp = start_scp()
    attributes = dataset(PatientID="PAT-1", PerformedProcedureStepStatus="IN PROGRESS")
    scp.answers["create"] = (0x0000, attributes)
    with associate(scp, transfer_syntax=syntax) as association:
        response = association.n_create(generate_uid(), n_create())
    assert decode(response.dataset, syntax) == attributes


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_large_data_sets_are_fragmented_both_ways(start_scp: StartScp, syntax: str) -> None:
    scp = start_scp(maximum_pdu_size=4096)
    sent = big_attribute_list()
    modification = completion(PerformedSeriesSequence=sent.PerformedSeriesSequence)
    scp.answers["create"] = (0x0000, sent)  # echoed back to us in PDUs of at most 4096
    with associate(scp, transfer_syntax=syntax, max_pdu=4096) as association:
        assert association.peer_max_pdu == 4096
        created = association.n_create(generate_uid(), sent)
        completed = association.n_set(generate_uid(), modification)

    assert (created.status, completed.status) == (0x0000, 0x0000)
    assert scp.created[0].dataset == sent
    assert scp.modified[0].dataset == modification
    assert decode(created.dataset, syntax) == sent
    fragments = [-(-len(encode_dataset(ds, syntax)) // (4096 - 6)) for ds in (sent, modification)]
    assert fragments[0] > 100_000 // 4096
    assert len(scp.p_data_lengths) == 2 + sum(fragments)  # a command PDU, data set PDUs
    assert max(scp.p_data_lengths) == 4096


def test_unsupported_sop_class_is_a_rejected_context(start_scp: StartScp) -> None:
    scp = start_scp(sop_classes=[VERIFICATION])
    with pytest.raises(PresentationContextRejected, match="abstract-syntax-not-supported"):
        associate(scp)
    assert scp.released.wait(WAIT), "the useless association is released"


def test_unsupported_transfer_syntax_is_a_rejected_context(start_scp: StartScp) -> None:
    scp = start_scp(syntaxes=[ImplicitVRLittleEndian])
    with pytest.raises(PresentationContextRejected, match="transfer-syntaxes-not-supported"):
        associate(scp, transfer_syntax=ExplicitVRLittleEndian)


def test_association_rejected(start_scp: StartScp) -> None:
    scp = start_scp(require_called_aet=True)
    with pytest.raises(AssociationRejected, match="called-AE-title-not-recognized") as raised:
        associate(scp, called_ae="SOMEONE")
    assert (raised.value.result, raised.value.source, raised.value.reason) == (1, 1, 7)


def test_release(start_scp: StartScp) -> None:
    scp = start_scp()
    association = associate(scp)
    association.release()
    assert scp.released.wait(WAIT)
    assert association.closed
    association.release()  # nothing more
    with pytest.raises(DimseError, match="closed"):
        association.n_create(generate_uid(), n_create())


def test_leaving_with_an_exception_aborts(start_scp: StartScp) -> None:
    scp = start_scp()
    with pytest.raises(RuntimeError), associate(scp):
        raise RuntimeError("modality crashed")
    assert scp.aborted.wait(WAIT)
    assert not scp.released.is_set()


def test_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        DimseAssociation.open("127.0.0.1", port, calling_ae="CT", called_ae="MWLBROKER")


# A scripted peer: pynetdicom decodes what we send, the answers are written by hand.


class Peer:
    """Accepts one connection on 127.0.0.1 and runs ``script`` on it in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._script = script
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                connection.settimeout(WAIT)
                self._script(connection)
        except BaseException as exc:  # raised again in the test by join()
            self._error = exc

    def join(self) -> None:
        self._thread.join(WAIT)
        self._listener.close()
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error


@contextmanager
def run_peer(script: Callable[[socket.socket], None], **options: Any) -> Iterator[DimseAssociation]:
    """An association with a :class:`Peer` running ``script``; aborted at the end."""
    peer = Peer(script)
    values: dict[str, Any] = {"calling_ae": "CT", "called_ae": "MWLBROKER", "timeout": WAIT}
    association = DimseAssociation.open("127.0.0.1", peer.port, **(values | options))
    try:
        yield association
    finally:
        association.abort()
        peer.join()


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        assert chunk, "the SCU closed the connection"
        data += chunk
    return data


def read_pdu(connection: socket.socket) -> tuple[int, bytes]:
    """A PDU: its type and all its bytes."""
    header = read_exactly(connection, 6)
    pdu_type, length = struct.unpack(">BxL", header)
    return pdu_type, header + read_exactly(connection, length)


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def accept(
    connection: socket.socket, max_pdu: int = 16384, syntax: str = ExplicitVRLittleEndian
) -> A_ASSOCIATE_RQ:
    """Read and decode the A-ASSOCIATE-RQ, answer an A-ASSOCIATE-AC accepting context 1."""
    pdu_type, data = read_pdu(connection)
    assert pdu_type == 0x01
    request = A_ASSOCIATE_RQ()
    request.decode(data)
    context = item(0x21, bytes((1, 0, 0, 0)) + item(0x40, syntax.encode()))
    user = item(0x50, item(0x51, struct.pack(">L", max_pdu)) + item(0x52, b"1.2.3.4"))
    body = data[6:74] + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user
    connection.sendall(struct.pack(">BxL", 0x02, len(body)) + body)
    return request


@dataclass
class Request:
    command: Dataset
    data: bytes
    pdu_lengths: list[int]


def read_request(connection: socket.socket) -> Request:
    """P-DATA-TF PDUs, decoded by pynetdicom, until a whole request with its data set."""
    command, data, lengths, done = b"", b"", [], False
    while not done:
        pdu_type, raw = read_pdu(connection)
        assert pdu_type == 0x04, f"PDU type {pdu_type}"
        pdu = P_DATA_TF()
        pdu.decode(raw)
        lengths.append(pdu.pdu_length)
        for value_item in pdu.presentation_data_value_items:
            assert value_item.context_id == 1
            pdv = value_item.data  # the control header, then the fragment
            assert pdv is not None
            if pdv[0] & 0x01:
                command += pdv[1:]
            else:
                data += pdv[1:]
                done = bool(pdv[0] & 0x02)
    decoded = read_dataset(BytesIO(command), is_implicit_VR=True, is_little_endian=True)
    assert decoded.CommandGroupLength == len(command) - 12
    return Request(decoded, data, lengths)


def response_command(message_id: int, command_field: int = 0x8140, data_set: bool = True) -> bytes:
    """A response command set, Implicit VR Little Endian with its group length."""
    ds = Dataset()
    ds.AffectedSOPClassUID = MPPS_SOP_CLASS
    ds.CommandField = command_field
    ds.MessageIDBeingRespondedTo = message_id
    ds.CommandDataSetType = 0x0001 if data_set else 0x0101
    ds.Status = 0x0000
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    body = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def pdv(control: int, fragment: bytes) -> bytes:
    return struct.pack(">LBB", len(fragment) + 2, 1, control) + fragment


def p_data(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BxL", 0x04, len(body)) + body


def test_associate_rq_as_pynetdicom_reads_it() -> None:
    seen: list[A_ASSOCIATE_RQ] = []

    def script(connection: socket.socket) -> None:
        seen.append(accept(connection))
        assert read_pdu(connection)[0] == 0x07  # the A-ABORT of run_peer

    with run_peer(script, calling_ae="CT01", called_ae="BROKER", max_pdu=32768):
        pass
    [request] = seen
    assert request.application_context_name == "1.2.840.10008.3.1.1.1"
    assert (request.calling_ae_title, request.called_ae_title) == ("CT01", "BROKER")
    [context] = request.presentation_context
    assert (context.context_id, context.abstract_syntax) == (1, MPPS_SOP_CLASS)
    assert context.transfer_syntax == [ExplicitVRLittleEndian]
    user = request.user_information
    assert user is not None
    assert user.maximum_length == 32768
    assert user.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert user.implementation_version_name == IMPLEMENTATION_VERSION_NAME


def test_several_pdvs_in_one_pdu() -> None:
    answer = dataset(PatientID="PAT-1", PatientName="Doe^John")
    encoded = encode_dataset(answer, ExplicitVRLittleEndian)

    def script(connection: socket.socket) -> None:
        accept(connection)
        request = read_request(connection)
        command = response_command(request.command.MessageID)
        connection.sendall(
            p_data(
                pdv(0x01, command[:10]),
                pdv(0x03, command[10:]),
                pdv(0x00, encoded[:7]),
                pdv(0x00, encoded[7:20]),
                pdv(0x02, encoded[20:]),
            )
        )
        assert read_pdu(connection)[0] == 0x05  # A-RELEASE-RQ
        connection.sendall(struct.pack(">BxL4x", 0x06, 4))

    with run_peer(script) as association:
        response = association.n_create(generate_uid(), n_create())
        association.release()
    assert response.status == 0x0000
    assert response.dataset == encoded


def test_request_fragments_fit_the_peers_maximum_length() -> None:
    seen: list[Request] = []
    sent = big_attribute_list()

    def script(connection: socket.socket) -> None:
        accept(connection, max_pdu=1000)
        seen.append(read_request(connection))
        command = response_command(seen[0].command.MessageID, 0x8120, data_set=False)
        connection.sendall(p_data(pdv(0x03, command)))
        assert read_pdu(connection)[0] == 0x07

    with run_peer(script) as association:
        assert association.n_set(generate_uid(), sent).status == 0x0000
    [request] = seen
    assert request.data == encode_dataset(sent, ExplicitVRLittleEndian)
    assert max(request.pdu_lengths) == 1000
    assert request.command.CommandField == 0x0120
    assert request.command.CommandDataSetType == 0x0000


def test_a_abort_in_reply_raises() -> None:
    def script(connection: socket.socket) -> None:
        accept(connection)
        read_request(connection)
        connection.sendall(struct.pack(">BxLxxBB", 0x07, 4, 2, 6))

    with run_peer(script) as association:
        with pytest.raises(AssociationAborted, match="invalid-PDU-parameter-value"):
            association.n_create(generate_uid(), n_create())
        assert association.closed


def test_connection_closed_raises() -> None:
    def script(connection: socket.socket) -> None:
        accept(connection)
        read_request(connection)

    with run_peer(script) as association, pytest.raises(AssociationAborted, match="closed the"):
        association.n_create(generate_uid(), n_create())


def test_wrong_message_id_aborts() -> None:
    def script(connection: socket.socket) -> None:
        accept(connection)
        request = read_request(connection)
        command = response_command(request.command.MessageID + 1, data_set=False)
        connection.sendall(p_data(pdv(0x03, command)))
        assert read_pdu(connection)[0] == 0x07

    with (
        run_peer(script) as association,
        pytest.raises(ProtocolError, match="Message ID Being Responded To 2, expected 1"),
    ):
        association.n_create(generate_uid(), n_create())


def test_silence_times_out_and_aborts() -> None:
    def script(connection: socket.socket) -> None:
        accept(connection)
        read_request(connection)
        assert read_pdu(connection)[0] == 0x07

    with run_peer(script, timeout=0.3) as association:
        with pytest.raises(DimseTimeout, match=r"within 0\.3 s"):
            association.n_create(generate_uid(), n_create())
        assert association.closed


def test_wrong_command_group_length_aborts() -> None:
    def script(connection: socket.socket) -> None:
        accept(connection)
        request = read_request(connection)
        command = response_command(request.command.MessageID, data_set=False)
        wrong = command[:8] + struct.pack("<L", len(command) - 10) + command[12:]
        connection.sendall(p_data(pdv(0x03, wrong)))
        assert read_pdu(connection)[0] == 0x07

    with (
        run_peer(script) as association,
        pytest.raises(ProtocolError, match="Command Group Length"),
    ):
        association.n_create(generate_uid(), n_create())


def test_invalid_ae_title_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="AE title"):
        DimseAssociation.open("127.0.0.1", 9, calling_ae="A" * 17, called_ae="MWLBROKER")
