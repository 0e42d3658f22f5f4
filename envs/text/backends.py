"""Importing this registers every text-world backend (each imports its package lazily)."""

import envs.text.textworld_cooking  # noqa: F401
import envs.text.twx  # noqa: F401
