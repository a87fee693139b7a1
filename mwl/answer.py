"""A worklist item → the identifier of one C-FIND Pending response (PS3.4 K.2.2.1.2, K.4.1.1.3).

Only the requested keys are answered (standards.md §3.2 "Return keys"): a requested attribute
the item does not store is present and zero length (Type 2, "Type handling" row; our intake
always stores the Type 1 keys); a sequence key asked with zero length or one empty item gets
every stored item whole, one asked with an item gets each stored item with only those item keys
— so the SPS Sequence carries its single item with the requested step attributes. Multi-valued
attributes come back whole (K.2.2.3: Scheduled Station AE Title ``CT1\\CT2``). Added without
being asked, as K.4.1.1.3.2 allows: Specific Character Set (0008,0005) when a text value is not
ASCII, and Timezone Offset From UTC (0008,0201) when the item stores one.

Character set (standards.md §3.3, §5): ``ISO_IR 192`` answers stored text as it is;
``ISO_IR 100`` transliterates what Latin-1 cannot encode (:mod:`mwl.transliterate`) and sends
only the alphabetic group of person names (ideographic and phonetic groups need ISO 2022).

The Dataset is built from the DICOM JSON values of the requested tags only (no
``Dataset.from_json`` of the whole item) and without pydicom's value validation: the values were
validated and fitted to their VR when the order was taken in (:mod:`mwl.dicomjson`).
"""

from __future__ import annotations

import base64
from typing import Any

from pydicom import Dataset, config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from mwl.model import DicomJson, WorklistItem
from mwl.policy import AnswerCharset
from mwl.query import ReturnKeys
from mwl.transliterate import to_latin1

_CHARSET_TAG = BaseTag(0x00080005)
_TIMEZONE_TAG = BaseTag(0x00080201)
_TIMEZONE = "00080201"
_CHARSET_TEXT = frozenset({"SH", "LO", "ST", "LT", "UC", "UT"})
"""VRs whose values may use the Specific Character Set (PS3.5 6.1.2.3); PN apart."""
_STRINGS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", *_CHARSET_TEXT})
_NUMBER_STRINGS = frozenset({"IS", "DS"})
_EMPTY_BINARY = dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_Elements = dict[BaseTag, DataElement | RawDataElement]
"""A Dataset's element mapping (``Dataset(mapping)`` takes it as is: no per-element checks)."""
_IGNORE = config.IGNORE


class _Text:
    """Text values for one answer in one character set; remembers whether any is not ASCII."""

    __slots__ = ("latin1", "non_ascii")

    def __init__(self, charset: AnswerCharset) -> None:
        self.latin1 = charset is AnswerCharset.LATIN1
        self.non_ascii = False

    def text(self, value: str | None) -> str:
        if not value:
            return ""
        if value.isascii():
            return value
        value = to_latin1(value) if self.latin1 else value
        self.non_ascii = self.non_ascii or not value.isascii()
        return value

    def person_name(self, value: dict[str, str] | None) -> str:
        """PS3.18 F.2.2 PN object → ``Alphabetic=Ideographic=Phonetic`` (PS3.5 6.2.1)."""
        if not value:
            return ""
        if self.latin1:
            return self.text(value.get("Alphabetic", ""))
        groups = "=".join(value.get(group, "") for group in _PN_GROUPS).rstrip("=")
        return self.text(groups)


def item_to_identifier(item: WorklistItem, keys: ReturnKeys, charset: AnswerCharset) -> Dataset:
    """The response identifier of one matching step (PS3.4 K.2.2.1.2, K.4.1.1.3.2)."""
    text = _Text(charset)
    elements = _requested(item.dataset, keys, text)
    timezone = item.dataset.get(_TIMEZONE)
    if timezone and timezone.get("Value"):
        elements[_TIMEZONE_TAG] = _element(_TIMEZONE_TAG, timezone, None, text)
    if text.non_ascii:
        elements[_CHARSET_TAG] = _converted(_CHARSET_TAG, "CS", charset.value)
    return Dataset(elements)


def _requested(data: DicomJson, keys: ReturnKeys, text: _Text) -> _Elements:
    """One level with exactly the requested keys; absent ones zero length (Type 2)."""
    elements: _Elements = {}
    for key in keys.keys:
        tag = BaseTag(key.tag)
        stored = data.get(key.json_tag)
        if stored is None:
            elements[tag] = _converted(tag, key.vr, _empty_value(key.vr))
        else:
            elements[tag] = _element(tag, stored, key.item, text)
    return elements


def _everything(data: DicomJson, text: _Text) -> _Elements:
    """A whole stored item (a sequence key asked with zero length or an empty item)."""
    elements: _Elements = {}
    for json_tag, stored in data.items():
        tag = BaseTag(int(json_tag, 16))
        elements[tag] = _element(tag, stored, None, text)
    return elements


def _element(
    tag: BaseTag, stored: dict[str, Any], item_keys: ReturnKeys | None, text: _Text
) -> DataElement:
    """A DataElement from one PS3.18 F.2 JSON attribute (``InlineBinary`` decoded, F.2.7;
    a ``BulkDataURI`` is not resolved: zero length)."""
    vr: str = stored["vr"]
    values = stored.get("Value")
    if vr == "SQ":
        items = [
            Dataset(
                _requested(entry, item_keys, text)
                if item_keys is not None
                else _everything(entry, text)
            )
            for entry in values or ()
        ]
        return _converted(tag, vr, Sequence(items))
    if values is None:
        binary = stored.get("InlineBinary")
        return _converted(tag, vr, base64.b64decode(binary) if binary else _empty_value(vr))
    return _converted(tag, vr, _value(vr, values, text))


def _value(vr: str, values: list[Any], text: _Text) -> Any:
    """The pydicom value of a JSON ``Value`` array: one value bare, several as a list, in the
    types pydicom's writer takes (PersonName for PN, str for strings, numbers as they are)."""
    converted: list[Any]
    if vr == "PN":
        converted = [
            PersonName(text.person_name(value), validation_mode=_IGNORE) for value in values
        ]
    elif vr in _CHARSET_TEXT:
        converted = [text.text(value) for value in values]
    elif vr in _STRINGS:
        converted = ["" if value is None else str(value) for value in values]
    elif vr == "AT":
        converted = [int(value, 16) for value in values]
    else:
        converted = ["" if value is None and vr in _NUMBER_STRINGS else value for value in values]
    return converted[0] if len(converted) == 1 else converted


def _converted(tag: BaseTag, vr: str, value: Any) -> DataElement:
    """A DataElement whose value is already in pydicom's type: no conversion, no validation
    (the values were fitted to their VR at intake, :mod:`mwl.dicomjson`)."""
    return DataElement(tag, vr, value, already_converted=True, validation_mode=_IGNORE)


def _empty_value(vr: str) -> Any:
    """A zero-length value pydicom writes as such."""
    if vr == "SQ":
        return Sequence()
    if vr in _STRINGS or vr in _NUMBER_STRINGS or vr == "PN":
        return ""
    return [] if vr == "AT" else _EMPTY_BINARY.get(vr)
