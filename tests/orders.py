"""Small HL7 messages built field by field for tests."""

from __future__ import annotations


def order(
    *,
    obr: str = "",
    orc: str = "NW|P1^RIS|F1^RIS||SC||^^^202611261030",
    zds: str = "",
    version: str = "2.3.1",
    pid: str = "PID|||12345^^^HOSP||Doe^John||19800101|M",
    control_id: str = "MSG1",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A small ORM^O01 with one ORC/OBR; each part can be replaced."""
    obr = obr or "OBR|1|P1^RIS|F1^RIS|CTHEAD^CT Head^L||||||||||||||ACC1|RP1|SPS1||||CT"
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MWL|RAD|20261126||ORM^O01|{control_id}|P|{version}",
        pid,
        "PV1||O",
        f"ORC|{orc}",
        obr,
    ]
    if zds:
        segments.append(zds)
    segments.extend(extra)
    return "\r".join(segments).encode()


def adt(event: str, pid: str, *, mrg: str = "", control_id: str = "ADT1") -> bytes:
    """An ADT message (A01/A04/A05/A08/A31, A40 and A47 with an MRG segment), v2.5.1."""
    segments = [
        f"MSH|^~\\&|ADT|HOSP|MWL|RAD|20261126||ADT^{event}|{control_id}|P|2.5.1",
        "EVN||20261126",
        pid,
    ]
    if mrg:
        segments.append(mrg)
    return "\r".join(segments).encode()
