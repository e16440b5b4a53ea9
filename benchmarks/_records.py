"""What the benchmarks share: appending a result record to a JSONL file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line (values JSON cannot hold as their ``str``), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        # After an interrupted write the file ends in a partial line; start a new one.
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(json.dumps(record, default=str).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
