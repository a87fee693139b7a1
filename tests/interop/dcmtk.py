"""DCMTK for the tests: its dump format read into pydicom datasets, worklist files written the
way ``dump2dcm`` writes them, and the rule for when DCMTK is missing.

``dump_to_dataset`` reads the subset of the ``dcmdump`` text format DCMTK's sample worklist
uses (``tests/data/dcmtk-wlist``): one element per line, ``[value]`` or a bare value, ``\\``
between values, ``(fffe,e000)`` / ``(fffe,e00d)`` / ``(fffe,e0dd)`` around sequence items.
An element given twice keeps its first value, as ``dump2dcm`` does.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DATA = Path(__file__).resolve().parents[1] / "data" / "dcmtk-wlist"
SAMPLES = sorted(DATA.glob("wklist*.dump"), key=lambda p: int(p.stem.removeprefix("wklist")))
MWL_FIND = "1.2.840.10008.5.1.4.31"
TIMEOUT = 30.0

_LINE = re.compile(
    r"^\((?P<group>[0-9a-fA-F]{4}),(?P<element>[0-9a-fA-F]{4})\)\s+(?P<vr>\S+)\s*(?P<value>.*)$"
)
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_SINGLE_VALUED = {"LT", "ST", "UT", "UR"}
_INTEGERS = {"US", "UL", "SS", "SL"}


def dump_to_dataset(text: str) -> Dataset:
    """A dataset from DCMTK dump text (the subset described in the module doc)."""
    root = Dataset()
    stack: list[Dataset | DicomSequence] = [root]
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        tag = int(match["group"] + match["element"], 16)
        _apply(stack, tag, match["vr"], match["value"])
    return root


def _apply(stack: list[Dataset | DicomSequence], tag: int, vr: str, raw: str) -> None:
    top = stack[-1]
    if tag == _ITEM and isinstance(top, DicomSequence):
        item = Dataset()
        top.append(item)
        stack.append(item)
    elif tag in (_ITEM_END, _SEQUENCE_END):
        stack.pop()
    elif isinstance(top, Dataset) and vr == "SQ":
        top.add_new(tag, "SQ", DicomSequence())
        stack.append(top[tag].value)
    elif isinstance(top, Dataset) and tag not in top:
        top.add_new(tag, vr, _value(vr, raw))


def _value(vr: str, raw: str) -> object:
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        return None
    values = [text] if vr in _SINGLE_VALUED else text.split("\\")
    converted: list[object] = [int(v) if vr in _INTEGERS else v for v in values]
    return converted[0] if len(converted) == 1 else converted


def sample_datasets() -> dict[str, Dataset]:
    """DCMTK's ten sample items, by file stem (``wklist1`` … ``wklist10``)."""
    return {path.stem: dump_to_dataset(path.read_text("latin-1")) for path in SAMPLES}


def write_worklist_file(dataset: Dataset, path: Path) -> Path:
    """``dataset`` as a DICOM file with meta header, Explicit VR Little Endian, as
    ``dump2dcm -g`` writes worklist files."""
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = MWL_FIND
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


# --- DCMTK tools -----------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@functools.cache
def tool(name: str) -> str | None:
    """The path of DCMTK's ``name``: the first on PATH whose ``--version`` says DCMTK.

    pynetdicom installs its own ``findscu``, ``echoscu`` … into the virtual environment, which
    comes first on PATH; those take other options.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(name, path=folder)
        if candidate is None:
            continue
        version = subprocess.run(
            [candidate, "--version"], check=False, capture_output=True, text=True, timeout=TIMEOUT
        )
        if "dcmtk" in version.stdout.lower():
            return candidate
    return None


def require_tools(*tools: str) -> None:
    """Skip (fail when CI=true) unless every DCMTK tool is on PATH."""
    missing = [name for name in tools if tool(name) is None]
    if missing:
        reason = (
            f"DCMTK tools not installed: {', '.join(missing)} "
            "(apt-get install dcmtk; .ci/run installs it)"
        )
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


def _path(name: str) -> str:
    found = tool(name)
    if found is None:
        raise FileNotFoundError(f"DCMTK's {name} is not installed")
    return found


def dcmtk_environment() -> dict[str, str]:
    """The environment for DCMTK tools: Nagle off (pitfalls.md "Nagle")."""
    return {**os.environ, "TCP_NODELAY": "1"}


def dump2dcm(dump: Path, out: Path) -> Path:
    """``dump2dcm -g +te``: one dump file as a worklist file (no group lengths, Explicit VR
    Little Endian), as DCMTK's README makes them."""
    subprocess.run(
        [_path("dump2dcm"), "-q", "-g", "+te", str(dump), str(out)],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
        env=dcmtk_environment(),
    )
    return out


# --- wlmscpfs in its own network namespace, findscu -------------------------------------------

READY_LINE = "setting association receive timeout"
"""wlmscpfs traces this in DUL_ReceiveAssociationRQ, after it has bound and listens."""


class Wlmscpfs:
    """``wlmscpfs`` serving ``data_dir`` in a loopback-only network namespace.

    DCMTK 3.6.7's wlmscpfs binds every interface (pitfalls.md "Network rules for tests"), so
    it runs under ``unshare -n`` with only ``lo`` up; :meth:`findscu_prefix` enters that
    namespace (``nsenter --net=/proc/PID/ns/net``). Readiness is its trace line
    :data:`READY_LINE`, read from its output with a timeout; a reader thread keeps draining
    the output so the server never blocks on a full pipe.
    """

    def __init__(self, data_dir: Path, port: int = 11112) -> None:
        self.data_dir = data_dir
        self.port = port
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        server = _path("wlmscpfs")
        script = f"ip link set lo up && exec {server} -ll trace -dfp {self.data_dir} {self.port}"
        self._process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",  # values in the trace are in the files' character sets
            env=dcmtk_environment(),
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(TIMEOUT) or self._process.poll() is not None:
            self.stop()
            raise RuntimeError("wlmscpfs did not start: " + " | ".join(list(self.output)[-5:]))

    def _drain(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line.rstrip())
            if READY_LINE in line:
                self._ready.set()
        self._ready.set()  # the process ended: start() sees it and reports the output

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def findscu_prefix(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net"]

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TIMEOUT)
        if self._reader is not None:
            self._reader.join(TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def findscu(
    query: Path, port: int, called_ae: str, out_dir: Path, prefix: Sequence[str] = ()
) -> list[Dataset]:
    """Run ``findscu -W`` with one query file; the response identifiers it received."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        *prefix, _path("findscu"), "-W", "-X", "-od", str(out_dir), "-aet", "FINDSCU",
        "-aec", called_ae, "-to", "10", "-ta", "10", "-td", "30", "127.0.0.1", str(port),
        str(query),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env=dcmtk_environment(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"findscu failed ({done.returncode}): {done.stderr.strip()}")
    return [dcmread(path) for path in sorted(out_dir.glob("rsp*.dcm"))]
