"""The Modality Worklist C-FIND SCP as a generator of responses (PS3.4 K.4.1.3).

:func:`find_worklist` turns one request identifier into the responses the SCP sends: one
Pending per matching Scheduled Procedure Step, each with its identifier, then Success — which
the protocol adapter (``broker.dicom``) sends when the generator ends; with no match only
Success. It touches no pynetdicom type: the adapter hands it the decoded identifier, the
calling AE title, a cancel check and the negotiated transfer syntax, and passes each ``(status,
identifier)`` on. Given a transfer syntax, each Pending identifier comes already encoded in it
(:class:`mwl.answer.IdentifierEncoder`, bytes), so the adapter needs no Dataset per match.

Statuses (PS3.4 Table K.4-1 / C.4-1), the one table of :class:`FindStatus`:

======  ==========================================================================
FF00    Pending: a match, all optional keys supported
FF01    Pending: a match, one or more optional keys not supported (K.2.2.1.1.2)
FE00    Cancel: a C-CANCEL arrived; checked before every response
A700    Refused, out of resources: more than ``max_matches`` (policy ``refuse``)
A900    Identifier does not match SOP Class (from :class:`mwl.query.QueryError`)
Cxxx    Unable to process: C110 the store failed, C111 anything unexpected (pynetdicom
        keeps C001, C002 and C310–C312 for its own failures; the query parser uses C100–C102)
======  ==========================================================================

A failure ends the exchange: its dataset is a status dataset carrying (0000,0900) Status,
(0000,0902) Error Comment and, when known, (0000,0901) Offending Element. Logs carry the
calling AE title, counts and statuses; never identifiers or patient data above DEBUG.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice

from pydicom import Dataset
from pydicom.uid import UID

from mwl.answer import IdentifierEncoder, item_to_identifier
from mwl.matching import WorklistFinder, WorklistQuery
from mwl.model import WorklistItem
from mwl.policy import OverLimit, WorklistPolicy
from mwl.ports import StoreFailure
from mwl.query import ParsedRequest, QueryError, identifier_to_request

log = logging.getLogger(__name__)

Identifier = Dataset | bytes
"""A Pending response's identifier: a Dataset, or bytes when encoded in a transfer syntax."""
Response = tuple[int, Identifier | None]
"""A status and, for Pending, the response identifier; for a failure, its status dataset."""


class FindStatus(enum.IntEnum):
    """The C-FIND statuses this SCP sends (PS3.4 Table K.4-1, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    CANCEL = 0xFE00
    OUT_OF_RESOURCES = 0xA700
    IDENTIFIER_MISMATCH = 0xA900
    STORE_UNAVAILABLE = 0xC110
    UNABLE_TO_PROCESS = 0xC111


PENDING_STATUSES = frozenset({FindStatus.PENDING, FindStatus.PENDING_WARNING})

_COMMENTS = {
    FindStatus.STORE_UNAVAILABLE: "worklist store unavailable",
    FindStatus.UNABLE_TO_PROCESS: "internal error; see the SCP log",
}

_ERROR_COMMENT_LENGTH = 64
"""(0000,0902) Error Comment is LO: at most 64 characters of the default repertoire."""


class _TooManyMatches(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} matches; narrow the query")
        self.comment = str(self)


def find_worklist(
    identifier: Dataset,
    *,
    calling_ae: str,
    finder: WorklistFinder,
    policy: WorklistPolicy,
    now: datetime,
    is_cancelled: Callable[[], bool],
    transfer_syntax: UID | None = None,
) -> Generator[Response, None, None]:
    """The responses to one Modality Worklist C-FIND request, before the final Success.

    Parameters
    ----------
    identifier
        The request identifier (keys with values to match, empty ones to return).
    calling_ae
        The requestor's AE title, for the per-caller defaults of ``policy``.
    finder
        Answers the parsed query from storage, lazily.
    policy
        The site's worklist policy: answer size and what to do beyond it.
    now
        The time relative defaults (``hours_around_now``) are taken from.
    is_cancelled
        True once a C-CANCEL for this request has arrived.
    transfer_syntax
        The presentation context's transfer syntax: each Pending identifier comes encoded in it,
        as bytes. None: as a Dataset.

    Yields
    ------
    tuple of int and Dataset, bytes or None
        ``(FF00|FF01, identifier)`` per match; or one terminal ``(FE00, None)`` or
        ``(failure, status dataset)``, after which nothing follows.
    """
    try:
        request = identifier_to_request(identifier, policy=policy, calling_ae=calling_ae, now=now)
        answer = _answer(request, transfer_syntax)
        yield from _answers(
            request, finder, policy, is_cancelled, calling_ae=calling_ae, answer=answer
        )
    except QueryError as error:
        log.info("C-FIND from %s: 0x%04X, offending %s", calling_ae, error.status,
                 _tags(error.offending))  # fmt: skip
        log.debug("C-FIND from %s: %s", calling_ae, error.comment)
        yield error.status, status_dataset(error.status, error.comment, error.offending)
    except _TooManyMatches as error:
        log.info("C-FIND from %s: refused, %s", calling_ae, error.comment)
        yield (
            FindStatus.OUT_OF_RESOURCES,
            status_dataset(FindStatus.OUT_OF_RESOURCES, error.comment),
        )
    except StoreFailure as error:
        log.warning("C-FIND from %s: %s", calling_ae, error)
        yield _failure(FindStatus.STORE_UNAVAILABLE)
    except Exception as error:  # the SCP answers every request, whatever went wrong
        log.error("C-FIND from %s failed: %s (traceback at DEBUG)", calling_ae,
                  type(error).__name__)  # fmt: skip
        log.debug("C-FIND from %s failed", calling_ae, exc_info=True)
        yield _failure(FindStatus.UNABLE_TO_PROCESS)


def status_dataset(status: int, comment: str, offending: Sequence[int] = ()) -> Dataset:
    """A status dataset: (0000,0900) Status, (0000,0902) Error Comment, (0000,0901)
    Offending Element (PS3.7 C.4.1). The comment is cut to 64 characters of ASCII."""
    dataset = Dataset()
    dataset.Status = int(status)
    dataset.ErrorComment = _error_comment(comment)
    if offending:
        dataset.OffendingElement = [int(tag) for tag in offending]
    return dataset


def _failure(status: FindStatus) -> Response:
    return status, status_dataset(status, _COMMENTS[status])


def _answer(
    request: ParsedRequest, transfer_syntax: UID | None
) -> Callable[[WorklistItem], Identifier]:
    """The response identifier of a match: encoded in ``transfer_syntax``, or a Dataset."""
    if transfer_syntax is not None:
        return IdentifierEncoder(request.return_keys, request.charset, transfer_syntax).encode
    return lambda item: item_to_identifier(item, request.return_keys, request.charset)


def _answers(
    request: ParsedRequest,
    finder: WorklistFinder,
    policy: WorklistPolicy,
    is_cancelled: Callable[[], bool],
    *,
    calling_ae: str,
    answer: Callable[[WorklistItem], Identifier],
) -> Iterator[Response]:
    """One Pending per match (K.4.1.3); FE00 instead of the next response, Success included,
    once a cancel is seen (the finder is closed first)."""
    status = FindStatus.PENDING_WARNING if request.unsupported else FindStatus.PENDING
    sent, cancelled = 0, False
    with _found(finder, request.query) as found:
        for identifier in _within_limit(map(answer, found), policy):
            cancelled = is_cancelled()
            if cancelled:
                break
            yield status, identifier
            sent += 1
    if cancelled or is_cancelled():
        log.info("C-FIND from %s: cancelled after %d matches", calling_ae, sent)
        yield FindStatus.CANCEL, None
        return
    unsupported = " (FF01: optional keys not matched)" if request.unsupported else ""
    log.info("C-FIND from %s: %d matches%s", calling_ae, sent, unsupported)


@contextmanager
def _found(finder: WorklistFinder, query: WorklistQuery) -> Iterator[Iterator[WorklistItem]]:
    """The finder's items, closed (its cursor and session released) however we leave."""
    items = finder.find(query)
    try:
        yield items
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _within_limit(answers: Iterator[Identifier], policy: WorklistPolicy) -> Iterable[Identifier]:
    """At most ``max_matches`` answers (no limit when it is 0); with ``refuse``,
    :class:`_TooManyMatches` before any is sent when there are more, so the first
    ``max_matches + 1`` are read ahead — as answers: encoded ones are bytes, which the garbage
    collector does not track, where 10,000 decoded items are ~1.5 million dicts and lists its
    full collections walk again and again (docs/benchmarks.md, "C-FIND")."""
    limit = policy.max_matches
    if limit <= 0:  # no limit configured
        return answers
    match policy.over_limit:
        case OverLimit.TRUNCATE:
            return islice(answers, limit)
        case OverLimit.REFUSE:
            ahead = list(islice(answers, limit + 1))
            if len(ahead) > limit:
                raise _TooManyMatches(limit)
            return ahead


def _error_comment(comment: str) -> str:
    ascii_only = comment.encode("ascii", "replace").decode("ascii")
    return ascii_only.replace("\\", "/")[:_ERROR_COMMENT_LENGTH]


def _tags(tags: Sequence[int]) -> str:
    return ",".join(f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in tags) or "-"
