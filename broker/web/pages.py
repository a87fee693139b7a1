"""Pagination, and the small value helpers every read module shares."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from broker.web.errors import Invalid, Problem

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LIKE_ESCAPE = "\\"


class Page(BaseModel, Generic[T]):
    """One page of a listing: ``items`` from ``offset``, ``total`` in all."""

    items: list[T]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + self.limit
        return following if following < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


def count(session: Session, query: Select[*tuple[Any, ...]]) -> int:
    """The number of rows ``query`` selects (ordering dropped)."""
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    return int(session.scalar(counted) or 0)


def like_pattern(value: str, *, contains: bool = False) -> str:
    """A user's search value as a ``LIKE`` pattern: ``*`` and ``?`` are wild cards (as in
    DICOM); ``%``, ``_`` and the escape character are literal. ``contains`` adds ``%`` at
    both ends."""
    escaped = value.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    pattern = escaped.replace("*", "%").replace("?", "_")
    return f"%{pattern}%" if contains else pattern


def text_match(
    column: ColumnElement[str] | InstrumentedAttribute[str], value: str
) -> ColumnElement[bool]:
    """Equality, or ``LIKE`` when the value has a ``*``/``?`` wild card."""
    if "*" in value or "?" in value:
        return column.like(like_pattern(value), escape=LIKE_ESCAPE)
    return column == value


def dicom_date(value: str | None, field: str) -> str | None:
    """``YYYYMMDD`` from ``YYYY-MM-DD`` or ``YYYYMMDD``; :class:`Invalid` naming ``field``."""
    if value is None or not value.strip():
        return None
    text = value.strip().replace("-", "")
    try:
        return datetime.strptime(text, "%Y%m%d").strftime("%Y%m%d")
    except ValueError:
        raise Invalid(
            f"{field}: expected a date YYYY-MM-DD, found {value!r}",
            (Problem(f"expected a date YYYY-MM-DD, found {value!r}", location=field),),
        ) from None


def dicom_datetime_to_iso(value: str) -> str:
    """``YYYYMMDDHHMMSS`` → ``YYYY-MM-DDTHH:MM:SS`` (local wall-clock time); '' stays ''."""
    if len(value) < 8:
        return ""
    text = value.ljust(14, "0")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}"


def day_bounds(day: date) -> tuple[str, str]:
    """The first and last ``YYYYMMDDHHMMSS`` of a day."""
    stem = day.strftime("%Y%m%d")
    return stem + "000000", stem + "235959"
