"""Plain-text tables: Markdown for reports, CSV for tools. Written atomically by the callers."""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Mapping, Sequence

Column = tuple[str, str, Callable[[Any], str]]  # (key, header, formatter)


def fmt_float(digits: int = 4) -> Callable[[Any], str]:
    return lambda v: "—" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(f(r.get(k)) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in keys})
    return buf.getvalue()
