"""External trackers for a run: accelerate's own ``GeneralTracker`` classes.

These are the classes behind ``Accelerator(log_with=...)``, so every tracker accelerate knows,
or one registered with ``accelerate.tracking.register_tracker_class``, works by name in
``report_to``. telos builds them itself rather than through an ``Accelerator`` because two
trainers run without one; what it adds is where each writes inside the run directory, one
tracker run per run directory across resumes, the config as flat hyper-parameters, and a
one-line error when a package is missing. ``telos.tracking.Tracker`` drives them; accelerate
is imported lazily (it pulls in torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from telos.cache import atomic_path
from telos.errors import UserError

_PROJECT_ENV = {"comet_ml": "COMET_PROJECT_NAME", "mlflow": "MLFLOW_EXPERIMENT_NAME"}  # else NAME_PROJECT
# Trackers whose run lives on (a server, a store) past the process: where a started one keeps
# its run id, saved as RUN/<name>_run_id so that a resume reopens the same run.
_RUN_ID = {"wandb": lambda t: t.run.id, "mlflow": lambda t: t.active_run.info.run_id}


def known_trackers() -> list[str]:
    """Every tracker name accelerate knows (its built-ins and registered ones), sorted."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS)


def _missing(name: str) -> UserError:
    # accelerate's tracker names are their PyPI names (pip normalizes comet_ml to comet-ml)
    return UserError(f"report_to: {name} needs the '{name}' package: pip install {name}")


def _installed(name: str) -> bool:
    """accelerate's own ``is_<name>_available`` check; a registered custom tracker has none and
    is taken as installed (its class is already imported)."""
    import accelerate.utils

    check = getattr(accelerate.utils, f"is_{name}_available", None)
    return check is None or bool(check())


def normalize_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The tracker names in ``report_to`` (a name or a list), lower-cased, without duplicates,
    ``none`` and empty names; an unknown name or a tracker whose package is missing is a
    ``UserError`` (the valid names come from accelerate)."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key in ("", "none") or key in out:
            continue
        valid = known_trackers()
        if key not in valid:
            raise UserError(f"report_to: unknown tracker {name!r}; valid: {', '.join(valid)}, none")
        if not _installed(key):
            raise _missing(key)
        out.append(key)
    return out


def flatten_config(config: dict, prefix: str = "") -> dict[str, bool | int | float | str | None]:
    """A nested config as the flat scalar hyper-parameters trackers take:
    ``{"train": {"lr": 1e-5}, "tags": ["a"]}`` → ``{"train.lr": 1e-5, "tags": '["a"]'}``.

    Nested dicts become dotted keys (the recipe's own override syntax); lists and other values
    that are not ``bool``/``int``/``float``/``str``/``None`` become strings (JSON where possible),
    since tensorboard's hparams rejects anything else."""
    flat: dict[str, bool | int | float | str | None] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_config(v, prefix=f"{key}."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            flat[key] = v
        else:
            flat[key] = json.dumps(v, default=str) if isinstance(v, (list, tuple)) else str(v)
    return flat


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """Only numeric scalars go to trackers (strings would become tensorboard text, lists fail)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _tracker_args(name: str, cls: type, run_dir: Path, start_step: int, run_id: str | None):
    """``(args, kwargs)`` for accelerate's tracker class ``name``: what
    ``Accelerator.init_trackers(project, init_kwargs=...)`` would pass, with the run's place
    (inside the run directory where the tracker writes locally), name and resume id. Project:
    ``$<NAME>_PROJECT`` (``COMET_PROJECT_NAME``, ``MLFLOW_EXPERIMENT_NAME``) or ``telos``."""
    project = os.environ.get(_PROJECT_ENV.get(name, f"{name.upper()}_PROJECT"), "telos")
    here, run_name = str(run_dir), run_dir.name
    if name == "tensorboard":
        # RUN/tb. SummaryWriter drops events with step >= purge_step: a resumed run logs again
        # from start_step + 1, so everything after the checkpoint goes, as in metrics.jsonl.
        return ("tb", here), {"purge_step": start_step + 1}
    if name == "wandb":
        return (project,), {"name": run_name, "dir": here, "id": run_id, "resume": "allow"}
    if name == "mlflow":  # where: MLflow's own MLFLOW_TRACKING_URI (its default otherwise)
        return (), {"experiment_name": project, "run_name": run_name, "run_id": run_id}
    if name == "trackio":
        return (project,), {"name": run_name}
    if name == "swanlab":
        (run_dir / "swanlog").mkdir(exist_ok=True)
        return (project,), {"experiment_name": run_name, "logdir": str(run_dir / "swanlog")}
    if name == "aim":  # an Aim repo in the run directory, like tensorboard's
        return (run_name, here), {"experiment": project}
    if name == "dvclive":
        return (), {"dir": str(run_dir / "dvclive"), "resume": start_step > 0}
    if name == "clearml":
        return (project,), {"task_name": os.environ.get("CLEARML_TASK", run_name)}
    # comet_ml and registered custom trackers: exactly as Accelerator.init_trackers calls them
    return ((project, here) if cls.requires_logging_directory else (project,)), {}


def start_tracker(name: str, run_dir: Path, config: dict | None, start_step: int):
    """Start accelerate's tracker ``name`` for this run; log ``config`` as hyper-parameters
    once per tracker run (not again when a resume reopens the same run)."""
    from accelerate.state import PartialState
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    # accelerate's trackers log through accelerate's logger, which needs the process state;
    # with an Accelerator it already exists (this is a no-op), without one it is the
    # single-process state.
    PartialState()
    cls = LOGGER_TYPE_TO_CLASS[name]
    id_file = run_dir / f"{name}_run_id"
    run_id = None
    if name in _RUN_ID and start_step > 0 and id_file.is_file():
        run_id = id_file.read_text().strip() or None
    resumed = start_step > 0 and (name not in _RUN_ID or run_id is not None)
    args, kwargs = _tracker_args(name, cls, run_dir, start_step, run_id)
    try:
        tracker = cls(*args, **kwargs)
        tracker.start()
    except ImportError as e:
        raise _missing(name) from e
    except Exception as e:  # not logged in, server unreachable, bad tracking URI: setup to fix
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"report_to: {name} could not start: {detail}") from e
    if name in _RUN_ID:
        with atomic_path(id_file) as tmp:
            tmp.write_text(str(_RUN_ID[name](tracker)))
    if config and not resumed:
        tracker.store_init_configuration(flatten_config(config))
    return tracker
