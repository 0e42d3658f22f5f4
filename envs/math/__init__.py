"""Single-turn math environment: data sources, prompt templates and answer extraction."""

from envs.math.answers import (
    clean_answer,
    extract_answer,
    extract_boxed,
    extract_hash_answer,
    normalize_number,
)
from envs.math.prompts import TEMPLATES, format_prompt
from envs.math.sources import SPEC_FORMS, DataSpec, load_rows, map_row, parse_spec

__all__ = [
    "SPEC_FORMS",
    "TEMPLATES",
    "DataSpec",
    "clean_answer",
    "extract_answer",
    "extract_boxed",
    "extract_hash_answer",
    "format_prompt",
    "load_rows",
    "map_row",
    "normalize_number",
    "parse_spec",
]
