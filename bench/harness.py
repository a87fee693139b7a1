"""What the benchmark scripts share: their results block in docs/benchmarks.md, and stopping
the broker they started."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_results(name: str, section: str, text: str) -> None:
    """Put ``text`` between the ``<!-- name:results:begin/end -->`` markers of DOC; when they
    are missing, add them under a new ``## section`` at the end."""
    begin, end = f"<!-- {name}:results:begin -->", f"<!-- {name}:results:end -->"
    block = f"{begin}\n{text}\n{end}"
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        DOC.write_text(head + block + rest.split(end, 1)[1], encoding="utf-8")
    else:
        DOC.write_text(current.rstrip("\n") + f"\n\n## {section}\n\n{block}\n", encoding="utf-8")


def stop_broker(process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; a non-zero exit is reported with its log."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        print(f"  warning: broker exited {code}; log in {log}", file=sys.stderr)
