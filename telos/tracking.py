"""Run tracking: ``metrics.jsonl``, a progress bar with ETA, and optional external trackers.

``metrics.jsonl`` is the source of truth (one JSON object per logged step, flushed at once, so
a killed run keeps everything it logged); external trackers (any that accelerate supports:
tensorboard, wandb, mlflow, trackio, ...) are optional mirrors of its numeric values.

Progress goes to stderr. On a terminal (or in Jupyter) it is a live ``rich`` bar; elsewhere (CI
logs, ``nohup``, pipes) a live bar would either be suppressed or flood the log, so we print one
plain line at start, every ~10 % of the work, and at the end instead.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from telos.errors import UserError
from telos.trackers import normalize_report_to, numeric_metrics, start_tracker

METRICS_FILE = "metrics.jsonl"
_HEARTBEAT_S = 300.0  # plain mode: print at least this often, even between 10 % marks


# ------------------------------------------------------------------------------ formatting


def format_value(v: Any) -> str:
    """Short human formatting for a metric value: ``0.1235``, ``1.2e-05``, ``4096``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


def _format_time(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds) or math.isnan(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _scalar(v: Any) -> Any:
    """Tensors / numpy scalars → python numbers, so they serialize to JSON."""
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except (ValueError, RuntimeError):  # not a one-element tensor/array
            pass
    if hasattr(v, "tolist") and callable(v.tolist):
        return v.tolist()
    return v


# ------------------------------------------------------------------------------ display

_console = None
_live = None  # the one shared rich Progress while any live display is active
_live_users = 0


def _get_console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def _is_interactive() -> bool:
    console = _get_console()
    return bool(console.is_terminal or getattr(console, "is_jupyter", False))


def _acquire_live():
    """One rich Progress per process (rich allows one live display per console): a nested
    ``progress()`` during training becomes a second bar under the training bar."""
    global _live, _live_users
    if _live is None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        _live = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=_get_console(),
            # rich estimates speed from the last N seconds only (default 30): with RL steps
            # slower than that the ETA would stay blank.
            speed_estimate_period=3600.0,
        )
        _live.start()
    _live_users += 1
    return _live


def _release_live(task_id) -> None:
    global _live, _live_users
    if _live is None:
        return
    _live_users -= 1
    if _live_users <= 0:
        _live.stop()  # the last frame stays on screen
        _live, _live_users = None, 0
    else:
        _live.remove_task(task_id)


class _Display:
    """A progress display: a live rich bar when interactive, sparse plain lines otherwise."""

    def __init__(self, total: int | None, description: str, start: int = 0) -> None:
        self.total = total
        self.description = description
        self.start = start
        self.completed = start
        self.info = ""
        self._closed = False
        self._t0 = time.monotonic()
        self._live_mode = _is_interactive()
        if self._live_mode:
            self._progress = _acquire_live()
            self._task = self._progress.add_task(description, total=total, completed=start, info="")
        else:
            self._last_print = self._t0
            self._last_decile = self._decile(start)
            if start:
                where = f" at {start}/{total if total else '?'}"
            else:
                where = f" ({total} total)" if total else ""
            self._print(f"{description}: starting{where}")

    def _decile(self, completed: int) -> int:
        return int(10 * completed / self.total) if self.total else 0

    def _print(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _summary(self) -> str:
        elapsed = time.monotonic() - self._t0
        done = self.completed - self.start
        if self.total:
            pct = 100 * self.completed / self.total
            # a count may overshoot its total (whole shards of episodes): the work is done, eta 0
            eta = max(0, self.total - self.completed) * elapsed / done if done > 0 else None
            head = f"{self.completed}/{self.total} ({pct:.0f}%)"
            timing = f"elapsed {_format_time(elapsed)} | eta {_format_time(eta)}"
        else:
            head = str(self.completed)
            timing = f"elapsed {_format_time(elapsed)}"
        line = f"{self.description}: {head} | {timing}"
        return line + (f" | {self.info}" if self.info else "")

    def update(self, completed: int, info: str | None = None) -> None:
        if self._closed:
            return
        self.completed = completed
        if info is not None:
            self.info = info
        if self._live_mode:
            self._progress.update(self._task, completed=completed, info=self.info)
            return
        now = time.monotonic()
        decile = self._decile(completed)
        finished = self.total is not None and completed >= self.total
        if decile > self._last_decile or finished or now - self._last_print >= _HEARTBEAT_S:
            self._last_decile = decile
            self._last_print = now
            self._print(self._summary())
            if finished:
                self._closed = True  # the last line is out; close() adds nothing

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._live_mode:
            _release_live(self._task)
        elif self.completed != self.start or self.total is None:
            self._print(self._summary())


class Progress:
    """Progress with ETA for loops outside training (evaluation, data generation).

    Use as an iterator (``for x in progress(items, "eval")``) or a context manager
    (``with progress(n, "generate") as p: ... p.advance()``); see :func:`progress`.
    """

    def __init__(self, iterable_or_total: Iterable | int | None, description: str) -> None:
        if iterable_or_total is None or isinstance(iterable_or_total, int):
            self._iterable = None
            self.total = iterable_or_total
        else:
            self._iterable = iterable_or_total
            self.total = len(iterable_or_total) if hasattr(iterable_or_total, "__len__") else None
        self.description = description
        self.completed = 0
        self._display: _Display | None = None

    def _ensure_started(self) -> _Display:
        if self._display is None:
            self._display = _Display(self.total, self.description)
        return self._display

    def advance(self, n: int = 1, **metrics: Any) -> None:
        """Count ``n`` more items done; ``metrics`` are shown next to the bar."""
        self.completed += n
        info = "  ".join(f"{k}={format_value(_scalar(v))}" for k, v in metrics.items())
        self._ensure_started().update(self.completed, info or None)

    def close(self) -> None:
        if self._display is not None:
            self._display.close()

    def __enter__(self) -> Progress:
        self._ensure_started()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        items = self._iterable if self._iterable is not None else range(self.total or 0)
        self._ensure_started()
        try:
            for item in items:
                yield item
                self.advance()
        finally:
            self.close()


def progress(iterable_or_total: Iterable | int | None, description: str = "working") -> Progress:
    """A progress display with elapsed time and ETA on stderr.

    ``iterable_or_total`` is what to iterate over, or a count to ``advance()`` towards
    (``None``: unknown). Same terminal / non-terminal behaviour as the training bar.
    """
    return Progress(iterable_or_total, description)


# ------------------------------------------------------------------------------ tracker


def _truncate_metrics(path: Path, keep_through_step: int) -> None:
    """Keep only rows with ``step <= keep_through_step`` (and drop a torn last line)."""
    if not path.is_file():
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            step = row.get("step", 0) if isinstance(row, dict) else None
            if isinstance(step, (int, float)) and step <= keep_through_step:
                kept.append(json.dumps(row) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Tracker:
    """Logs training metrics to ``RUN/metrics.jsonl``, a progress bar and optional trackers.

    ``start_step``: the step the run (re)starts from; rows of ``metrics.jsonl`` after it are
    dropped, so a killed-and-resumed run has no duplicate steps (a fresh start, 0, keeps only
    step-0 rows). ``report_to``: tracker names accelerate knows (``tensorboard``, ``wandb``,
    ``mlflow``, ``trackio``, ...; ``none`` or empty: nothing), sent the numeric metrics of each
    step and ``config`` flattened as hyper-parameters. ``progress_keys``: metrics shown next to
    the bar. ``enabled=False`` (non-main ranks) makes every method a no-op.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int,
        start_step: int = 0,
        report_to: str | Sequence[str] | None = (),
        config: dict | None = None,
        enabled: bool = True,
        progress_keys: Sequence[str] = (),
        description: str = "train",
    ) -> None:
        names = normalize_report_to(report_to)  # validated on every rank: no side effects
        self.enabled = enabled
        self._closed = not enabled
        if not enabled:
            return
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.progress_keys = list(progress_keys)
        self._shown: dict[str, Any] = {}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Trackers first: one that cannot start fails before metrics.jsonl is touched.
        self._trackers = []
        try:
            for name in names:
                self._trackers.append(start_tracker(name, self.run_dir, config, start_step))
        except BaseException:
            for t in self._trackers:
                t.finish()
            raise
        _truncate_metrics(self.metrics_path, start_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._display = _Display(total_steps, description, start=start_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append ``{"step": step, **metrics}`` to metrics.jsonl, send the numeric ones to the
        trackers and update the progress bar."""
        if self._closed:
            return
        row = {"step": int(step)}
        row.update({k: _scalar(v) for k, v in metrics.items() if k != "step"})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        values = {k: v for k, v in row.items() if k != "step"}
        numeric = numeric_metrics(values)
        if numeric:  # dvclive would advance a step for an empty row
            for t in self._trackers:
                t.log(numeric, step=row["step"])
        for k in self.progress_keys:
            if k in values:
                self._shown[k] = values[k]
        info = "  ".join(f"{k}={format_value(v)}" for k, v in self._shown.items())
        self._display.update(row["step"], info)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._display.close()
        self._file.close()
        for t in self._trackers:
            t.finish()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (or of ``RUN/metrics.jsonl`` when given a run directory).
    Blank lines and a line torn by a killed run are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"metrics file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows
