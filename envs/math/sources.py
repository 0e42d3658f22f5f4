"""Math data sources: one spec string → a list of rows ``{"prompt", "answer", ["solution"], ...}``.

Spec forms (see :data:`SPEC_FORMS`): procedural generators (offline, the default for tests and
the quickstart), local files, Hugging Face hub datasets and reasoning-gym tasks. Every row goes
through the same field mapping, so GSM8K- and MATH-shaped data work without a conversion step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from envs.math.answers import extract_boxed, extract_hash_answer
from telos.errors import UserError

__all__ = ["SPEC_FORMS", "DataSpec", "is_conversational", "load_rows", "map_row", "parse_spec"]

SPEC_FORMS = (
    "procedural:NAME[:SPLIT][?n=N&k=v]",
    "PATH.jsonl | PATH.json | PATH.parquet",
    "hf:REPO[:CONFIG][@SPLIT]",
    "reasoning-gym:TASK[?size=N&seed=S]",
)
_FILE_EXTENSIONS = (".jsonl", ".json", ".parquet")
_DEFAULT_N = 1000


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec. ``name`` is the generator / path / repo / task; ``config`` and
    ``split`` are None when the spec leaves them out; ``params`` holds the ``?k=v`` query."""

    scheme: str  # "procedural" | "file" | "hf" | "reasoning-gym"
    name: str
    config: str | None = None
    split: str | None = None
    params: dict[str, int | float | str] = field(default_factory=dict)


def _parse_value(v: str) -> int | float | bool | str:
    # `allow_negation=false` must reach a generator as False: the string "false" is truthy
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _parse_query(spec: str, query: str) -> dict[str, int | float | bool | str]:
    params: dict[str, int | float | bool | str] = {}
    for part in query.split("&"):
        if not part:
            continue
        if "=" not in part:
            raise _bad_spec(spec, f"query part {part!r} is not k=v")
        [(k, v)] = parse_qsl(part, keep_blank_values=True)
        params[k] = _parse_value(v)
    return params


def _bad_spec(spec: str, why: str) -> UserError:
    return UserError(f"bad data spec {spec!r}: {why}; valid forms: {' | '.join(SPEC_FORMS)}")


def parse_spec(spec: str) -> DataSpec:
    """Parse a data spec string (pure: touches neither disk nor network)."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad_spec(str(spec), "empty")
    spec = spec.strip()
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "procedural":
        body, _, query = rest.partition("?")
        name, _, split = body.partition(":")
        if not name:
            raise _bad_spec(spec, "no generator name")
        return DataSpec("procedural", name, None, split or None, _parse_query(spec, query))
    if sep and scheme == "hf":
        body, _, split = rest.partition("@")
        repo, _, config = body.partition(":")
        if not repo:
            raise _bad_spec(spec, "no dataset repo")
        return DataSpec("hf", repo, config or None, split or None)
    if sep and scheme == "reasoning-gym":
        task, _, query = rest.partition("?")
        if not task:
            raise _bad_spec(spec, "no task name")
        return DataSpec("reasoning-gym", task, None, None, _parse_query(spec, query))
    if spec.lower().endswith(_FILE_EXTENSIONS):
        return DataSpec("file", spec)
    raise _bad_spec(spec, "unknown source")


# --- loaders ---------------------------------------------------------------------------------


def _load_procedural(ds: DataSpec, seed: int) -> list[dict[str, Any]]:
    from envs.math.procedural import generate

    params = dict(ds.params)
    n = params.pop("n", _DEFAULT_N)
    if not isinstance(n, int) or n < 0:
        raise UserError(f"procedural:{ds.name}: n must be a non-negative integer, got {n!r}")
    return generate(ds.name, split=ds.split or "train", n=n, seed=seed, **params)


def _read_json_lines(path: str, text: str, limit: int | None = None) -> list[Any]:
    rows: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {lineno}: invalid JSON: {e.msg}") from None
    return rows


def _load_file(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    # Read local files directly instead of through datasets.load_dataset: no cache directory
    # under ~/.cache, no Arrow conversion, and errors that name the file and line.
    if not os.path.isfile(path):
        raise UserError(f"data file not found: {path}")
    lower = path.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows: list[Any] = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise UserError(f"{path}: cannot read parquet: {e}") from None
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if lower.endswith(".jsonl"):
            rows = _read_json_lines(path, text, limit)  # `telos check` reads only the first rows
        else:
            # ".json" holds either one JSON list of objects or JSON lines.
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = _read_json_lines(path, text)
            rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"row {i} of {path} is a {type(row).__name__}, not a JSON object")
    return rows


def _load_hf(ds: DataSpec, limit: int | None) -> list[dict[str, Any]]:
    import datasets

    split = ds.split or "train"
    if limit is not None and "[" not in split:
        split = f"{split}[:{limit}]"  # let datasets slice instead of materialising every row
    try:
        data = datasets.load_dataset(ds.name, ds.config, split=split)
    except Exception as e:  # network, missing repo or config, bad split: all user-fixable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load hf:{ds.name}: {first}") from None
    return data.to_list()


def _load_reasoning_gym(ds: DataSpec, seed: int, limit: int | None) -> list[dict[str, Any]]:
    try:
        import reasoning_gym
    except ImportError:
        raise UserError("reasoning-gym is not installed: pip install reasoning-gym") from None
    params = dict(ds.params)
    # Entry i depends only on (seed, i), so generating just `limit` entries gives the same rows
    # as generating the default size and slicing.
    params.setdefault("size", limit if limit is not None else _DEFAULT_N)
    params.setdefault("seed", seed)
    try:
        data = reasoning_gym.create_dataset(ds.name, **params)
    except (ValueError, TypeError, KeyError, AssertionError) as e:  # unknown task, bad option
        raise UserError(f"reasoning-gym:{ds.name}: {e}") from None
    rows = []
    for entry in data:
        row = {k: v for k, v in entry.items() if k not in ("question", "answer")}
        row["prompt"] = entry["question"]
        row["answer"] = entry["answer"]
        cot = (entry.get("metadata") or {}).get("answer_cot")
        if isinstance(cot, str) and cot.strip():  # gsm_symbolic: a GSM8K-style worked solution
            row["solution"] = cot
        rows.append(row)
    return rows


# --- field mapping ---------------------------------------------------------------------------


def _fields(row: dict[str, Any]) -> str:
    return ", ".join(map(str, row)) or "(none)"


def _ends_with_hash_line(solution: str) -> bool:
    lines = [ln for ln in solution.strip().splitlines() if ln.strip()]
    return bool(lines) and lines[-1].lstrip().startswith("####")


def is_conversational(prompt: Any) -> bool:
    """TRL's conversational format: the prompt is a list of ``{"role", "content"}`` messages
    (TRL's standard format: a string)."""
    return isinstance(prompt, list)


def _check_messages(prompt: list, index: int, source: str) -> None:
    for k, m in enumerate(prompt):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise UserError(
                f'row {index} of {source}: \'prompt\' message {k} must be {{"role": str, "content": str}}, '
                f"got {m!r:.80}"
            )
    if not prompt:
        raise UserError(f"row {index} of {source}: 'prompt' is an empty list of messages")


def map_row(row: dict[str, Any], index: int, source: str) -> dict[str, Any]:
    """Bring one raw row to the contract: a ``prompt`` (a string, or in TRL's conversational
    format a list of ``{"role", "content"}`` messages), an ``answer`` string, and a
    ``solution`` ending in ``#### <answer>`` when the data has one. Other columns are kept."""
    original_fields = _fields(row)
    row = dict(row)
    if "prompt" not in row:
        for alias in ("question", "problem"):
            if alias in row:
                row["prompt"] = row.pop(alias)
                break
        else:
            raise UserError(
                f"row {index} of {source} has no 'prompt' (or 'question'/'problem') field; "
                f"fields: {original_fields}"
            )
    if is_conversational(row["prompt"]):
        _check_messages(row["prompt"], index, source)
    elif not isinstance(row["prompt"], str):
        raise UserError(
            f"row {index} of {source}: 'prompt' must be a string (TRL's standard format) or a list of "
            f"{{role, content}} messages (conversational format), got {type(row['prompt']).__name__}"
        )

    answer = row.get("answer")
    if isinstance(answer, str) and "####" in answer:
        # GSM8K: the answer column holds the whole worked solution ending in "#### n".
        row.setdefault("solution", answer)
        answer = extract_hash_answer(answer)
        if answer is None:
            raise UserError(
                f"row {index} of {source}: 'answer' has an empty '####' line; fields: {original_fields}"
            )
    elif answer is None and isinstance(row.get("solution"), str):
        # MATH: only a LaTeX solution with the final answer in \boxed{}.
        answer = extract_boxed(row["solution"]) or extract_hash_answer(row["solution"])
        if answer is None:
            raise UserError(
                f"row {index} of {source} has no 'answer' field and its 'solution' has no "
                f"\\boxed{{}} or '####' answer; fields: {original_fields}"
            )
    if answer is None:
        raise UserError(
            f"row {index} of {source} has no 'answer' (or 'solution') field; fields: {original_fields}"
        )
    # JSON and parquet may give numbers; the contract (and every verifier) wants strings.
    row["answer"] = answer if isinstance(answer, str) else str(answer)

    solution = row.get("solution")
    if isinstance(solution, str) and not _ends_with_hash_line(solution):
        # One final-answer format for SFT targets and the verifiers alike.
        row["solution"] = f"{solution.rstrip()}\n#### {row['answer']}"
    return row


def load_rows(
    spec: str, *, limit: int | None = None, seed: int = 0, raw: bool = False
) -> list[dict[str, Any]]:
    """Load the rows named by ``spec``; ``limit`` keeps the first ``limit`` rows, ``seed`` seeds
    the procedural and reasoning-gym generators. Bad specs, files and rows raise UserError.
    ``raw`` returns the rows as stored, without the math mapping (preference or stepwise data)."""
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0, got {limit}")
    ds = parse_spec(spec)
    if ds.scheme == "procedural":
        rows = _load_procedural(ds, seed)
    elif ds.scheme == "file":
        rows = _load_file(ds.name, limit)
    elif ds.scheme == "hf":
        rows = _load_hf(ds, limit)
    else:
        rows = _load_reasoning_gym(ds, seed, limit)
    if limit is not None:
        rows = rows[:limit]
    source = ds.name if ds.scheme == "file" else spec.strip()
    if raw:
        return [dict(row) for row in rows]
    return [map_row(row, i, source) for i, row in enumerate(rows)]
