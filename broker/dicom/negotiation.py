"""Association negotiation as the acceptor, sans I/O (PS3.8 7.1, 9.3.2–9.3.4; PS3.7 Annex D).

:func:`negotiate` reads an A-ASSOCIATE-RQ PDU and answers it: :class:`Accepted` with the
A-ASSOCIATE-AC PDU and the accepted presentation contexts, or :class:`Rejected` with the
A-ASSOCIATE-RJ PDU. The PDU items are read and written by pynetdicom's PDU classes, and the
presentation contexts negotiated by its ``negotiate_as_acceptor`` (the first transfer syntax of
the requestor's list that the acceptor supports; SCP/SCU role selection answered), so the
acceptance rules are pynetdicom's own:

=========================================  ======  ======  ======  =========================
condition                                  result  source  reason  PS3.8 Table 9-21
=========================================  ======  ======  ======  =========================
protocol version without bit 0             1       2       2       protocol version not
                                                                   supported (ACSE)
application context not 1.2.840.10008.3.1.1.1  1   1       2       application context name
                                                                   not supported
Called AE Title not ours (when required)   1       1       7       called AE not recognized
Calling AE Title not allowed               1       1       3       calling AE not recognized
open associations at ``max_associations``  2       3       2       local limit exceeded
=========================================  ======  ======  ======  =========================

The A-ASSOCIATE-AC carries our Maximum Length Received (PS3.8 D.1), our Implementation Class
UID and Version Name (PS3.7 D.3.3.2) and the SCP/SCU role selection answers; Asynchronous
Operations Window, User Identity and extended negotiation items are not answered, which PS3.7
D.3.3 lets an acceptor do (one operation at a time, no identity check, no extended behaviour).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.uid import UID, generate_uid
from pynetdicom import pdu as pdus
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_as_acceptor

from broker.dicom.pdu import PduError, associate_rj

APPLICATION_CONTEXT: Final = UID("1.2.840.10008.3.1.1.1")
"""The DICOM Application Context Name (PS3.7 A.2.1)."""
IMPLEMENTATION_CLASS_UID: Final = generate_uid(entropy_srcs=["mwl-broker"])
"""Our Implementation Class UID: fixed, under pydicom's root (PS3.7 D.3.3.2)."""
IMPLEMENTATION_VERSION_NAME: Final = "MWLBROKER_01"

PERMANENT, TRANSIENT = 0x01, 0x02
SERVICE_USER, ACSE_PROVIDER, PRESENTATION_PROVIDER = 0x01, 0x02, 0x03
APPLICATION_CONTEXT_NOT_SUPPORTED = (PERMANENT, SERVICE_USER, 0x02)
CALLING_AE_NOT_RECOGNIZED = (PERMANENT, SERVICE_USER, 0x03)
CALLED_AE_NOT_RECOGNIZED = (PERMANENT, SERVICE_USER, 0x07)
PROTOCOL_VERSION_NOT_SUPPORTED = (PERMANENT, ACSE_PROVIDER, 0x02)
LOCAL_LIMIT_EXCEEDED = (TRANSIENT, PRESENTATION_PROVIDER, 0x02)


@dataclass(frozen=True, slots=True)
class AcceptancePolicy:
    """What the acceptor accepts: ``[dicom]`` and the SOP classes it serves."""

    ae_title: str
    require_called_ae: bool
    allowed_callers: tuple[str, ...]
    maximum_pdu_size: int
    """Our Maximum Length Received (0: no limit)."""
    contexts: tuple[tuple[str, tuple[str, ...]], ...]
    """(abstract syntax, transfer syntaxes) per SOP class served."""

    def supported(self) -> list[PresentationContext]:
        """The contexts as pynetdicom's negotiation takes them (built once; it only reads them)."""
        return _supported(self.contexts)


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """A presentation context the association may use."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class Accepted:
    calling_ae: str
    called_ae: str
    contexts: dict[int, AcceptedContext]
    peer_maximum_pdu: int
    """The requestor's Maximum Length Received (0: no limit)."""
    pdu: bytes
    """The A-ASSOCIATE-AC to send."""


@dataclass(frozen=True, slots=True)
class Rejected:
    calling_ae: str
    called_ae: str
    result: int
    source: int
    reason: int
    pdu: bytes
    """The A-ASSOCIATE-RJ to send."""


@functools.cache
def _supported(contexts: tuple[tuple[str, tuple[str, ...]], ...]) -> list[PresentationContext]:
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in contexts]


def negotiate(rq: bytes, policy: AcceptancePolicy, *, at_limit: bool) -> Accepted | Rejected:
    """Answer the A-ASSOCIATE-RQ PDU ``rq``; ``at_limit``: the open associations are at the
    maximum already.

    Raises
    ------
    PduError
        ``rq`` cannot be decoded: the caller aborts (A-ABORT, PS3.8 9.2 AA-8).
    """
    try:
        pdu = pdus.A_ASSOCIATE_RQ()
        pdu.decode(rq)
        primitive = pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises whatever its decoding meets
        raise PduError(f"an A-ASSOCIATE-RQ that cannot be decoded: {exc}") from exc
    calling = str(primitive.calling_ae_title).strip()
    called = str(primitive.called_ae_title).strip()
    refusal = _refusal(pdu, primitive, (calling, called), policy, at_limit=at_limit)
    if refusal is not None:
        return Rejected(calling, called, *refusal, pdu=associate_rj(*refusal))
    roles = {
        UID(item.sop_class_uid): (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid
    }
    try:
        results, role_items = negotiate_as_acceptor(
            primitive.presentation_context_definition_list, policy.supported(), roles or None
        )
    except Exception as exc:  # a context without a transfer syntax, say (PS3.8 9.3.2.2)
        raise PduError(f"presentation contexts that cannot be negotiated: {exc!r}") from exc
    contexts = {
        int(cx.context_id): AcceptedContext(
            int(cx.context_id), str(cx.abstract_syntax), str(cx.transfer_syntax[0])
        )
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    ac = _accept(primitive, results, role_items, policy.maximum_pdu_size)
    return Accepted(
        calling,
        called,
        contexts,
        int(primitive.maximum_length_received or 0),
        ac,
    )


def _refusal(
    pdu: pdus.A_ASSOCIATE_RQ,
    primitive: A_ASSOCIATE,
    titles: tuple[str, str],
    policy: AcceptancePolicy,
    *,
    at_limit: bool,
) -> tuple[int, int, int] | None:
    calling, called = titles
    if not pdu.protocol_version & 0x0001:
        return PROTOCOL_VERSION_NOT_SUPPORTED
    if str(primitive.application_context_name) != APPLICATION_CONTEXT:
        return APPLICATION_CONTEXT_NOT_SUPPORTED
    if policy.require_called_ae and called != policy.ae_title.strip():
        return CALLED_AE_NOT_RECOGNIZED
    if policy.allowed_callers and calling not in {c.strip() for c in policy.allowed_callers}:
        return CALLING_AE_NOT_RECOGNIZED
    if at_limit:
        return LOCAL_LIMIT_EXCEEDED
    return None


def _accept(
    rq: A_ASSOCIATE,
    results: Sequence[PresentationContext],
    role_items: Sequence[SCP_SCU_RoleSelectionNegotiation],
    maximum_pdu_size: int,
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = rq.calling_ae_title
    primitive.called_ae_title = rq.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = list(results)
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = maximum_pdu_size
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    primitive.user_information = [maximum, implementation, version, *role_items]
    ac = pdus.A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return bytes(ac.encode())
