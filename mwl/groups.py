"""Segment groups of an order message (standards.md §1.1 structures, §1.4 grouping).

The patient part is everything before the first ORC; each ORC starts an order group; each
OBR in it starts a block that owns the NTE, ZDS, IPC and OBX segments after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hl7.codec import Message, Segment


@dataclass
class ObrBlock:
    """An OBR and the segments it owns (NTE, ZDS, IPC, OBX …)."""

    obr: Segment
    owned: list[Segment] = field(default_factory=list)

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.owned if seg.name == name]

    def first(self, name: str) -> Segment | None:
        return next((seg for seg in self.owned if seg.name == name), None)


@dataclass
class OrcGroup:
    """An ORC, the segments between it and its first OBR (TQ1 …), and its OBR blocks."""

    orc: Segment
    head: list[Segment] = field(default_factory=list)
    blocks: list[ObrBlock] = field(default_factory=list)

    def first(self, name: str) -> Segment | None:
        return next((seg for seg in self.head if seg.name == name), None)


def split_groups(message: Message) -> tuple[list[Segment], list[OrcGroup]]:
    """The patient part and the order groups of an order message."""
    patient: list[Segment] = []
    groups: list[OrcGroup] = []
    for seg in message.segments[1:]:
        if seg.name == "ORC":
            groups.append(OrcGroup(seg))
        elif not groups:
            patient.append(seg)
        elif seg.name == "OBR":
            groups[-1].blocks.append(ObrBlock(seg))
        elif groups[-1].blocks:
            groups[-1].blocks[-1].owned.append(seg)
        else:
            groups[-1].head.append(seg)
    return patient, groups
