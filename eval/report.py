"""Evaluation reports: ``results.json`` and a Markdown table (``report.md``, also printed)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telos.cache import atomic_path


def format_cell(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.{digits}g}"


def markdown_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; cells go through :func:`format_cell`, and ``|`` in a
    cell is escaped so a model path or data spec cannot break the table."""
    cells = [[format_cell(c).replace("|", "\\|") for c in row] for row in rows]
    head = [str(h) for h in headers]
    widths = [max([len(head[i])] + [len(r[i]) for r in cells]) for i in range(len(head))]

    def line(parts: Sequence[str]) -> str:
        return "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in cells)]) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` through a private temporary file and a rename (``telos.cache.atomic_path``),
    so a reader never sees half."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (see :func:`write_text`)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")
