"""Tracker (metrics.jsonl, resume truncation, report_to), progress displays and plots."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
import torch

from telos import trackers as tracking_backends
from telos import tracking
from telos.errors import UserError
from telos.plots import bar_chart, plot_metrics
from telos.tracking import Tracker, normalize_report_to, progress, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plain(monkeypatch):
    """Force the non-terminal (CI log) display, whatever the environment says."""
    monkeypatch.setattr(tracking, "_is_interactive", lambda: False)


@pytest.fixture
def terminal(monkeypatch):
    """A fake terminal console: the live rich bar renders into a buffer."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    monkeypatch.setattr(tracking, "_console", console)
    return buf


def test_metrics_jsonl_content(tmp_path, plain):
    with Tracker(tmp_path, total_steps=3, progress_keys=["loss"]) as tr:
        tr.log(1, {"loss": 1.5, "reward_mean": 0.25})
        tr.log(2, {"loss": torch.tensor(0.5), "n": 3})  # tensors become numbers
        tr.log(3, {"eval_accuracy": 0.75})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 1, "loss": 1.5, "reward_mean": 0.25},
        {"step": 2, "loss": 0.5, "n": 3},
        {"step": 3, "eval_accuracy": 0.75},
    ]
    assert read_metrics(tmp_path) == rows  # a run directory works too
    # one JSON object per line
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_resume_truncates_metrics_after_start_step(tmp_path, plain):
    with Tracker(tmp_path, total_steps=10) as tr:
        for step in range(1, 6):
            tr.log(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by a SIGKILL
    # killed after step 5; the last checkpoint was step 3
    with Tracker(tmp_path, total_steps=10, start_step=3) as tr:
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
        tr.log(4, {"loss": 40.0})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] == 40.0


def test_disabled_tracker_does_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    tr = Tracker(run, total_steps=5, enabled=False, report_to=["tensorboard"])
    tr.log(1, {"loss": 1.0})
    tr.close()
    assert not run.exists()
    assert capsys.readouterr().err == ""


def test_report_to_validation(tmp_path, monkeypatch, plain):
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    # the valid names are accelerate's (mlflow, dvclive, ... too), not a list of telos's own
    valid = ", ".join(sorted(LOGGER_TYPE_TO_CLASS))
    assert "mlflow" in valid and "dvclive" in valid
    with pytest.raises(UserError) as e:
        Tracker(tmp_path, total_steps=1, report_to=["tensorbord"])
    assert str(e.value) == f"report_to: unknown tracker 'tensorbord'; valid: {valid}, none"
    # "none" and an empty list mean no tracker
    Tracker(tmp_path, total_steps=1, report_to=["none"]).close()
    Tracker(tmp_path, total_steps=1, report_to="none").close()
    Tracker(tmp_path, total_steps=1, report_to=[]).close()
    # a package that fails to import is a one-line UserError with the install command
    # (accelerate imports it as `from torch.utils import tensorboard`, hence the delattr)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.delattr(torch.utils, "tensorboard", raising=False)
    msg = "report_to: tensorboard needs the 'tensorboard' package: pip install tensorboard"
    with pytest.raises(UserError) as e:
        Tracker(tmp_path / "tb_run", total_steps=1, report_to=["tensorboard"])
    assert str(e.value) == msg
    assert not (tmp_path / "tb_run" / "metrics.jsonl").exists()


def test_report_to_names_a_tracker_whose_package_is_missing(tmp_path):
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    missing = [n for n in sorted(LOGGER_TYPE_TO_CLASS) if not tracking_backends._installed(n)]
    if not missing:
        pytest.skip("every tracker accelerate knows is installed here")
    name = missing[0]
    msg = f"report_to: {name} needs the '{name}' package: pip install {name}"
    with pytest.raises(UserError) as e:
        normalize_report_to(["tensorboard", name.upper()])  # the recipe check sees it already
    assert str(e.value) == msg
    with pytest.raises(UserError, match=re.escape(msg)):
        Tracker(tmp_path, total_steps=1, report_to=name)
    assert not (tmp_path / "metrics.jsonl").exists()


CONFIG = {"trainer": "grpo", "train": {"lr": 1e-5, "steps": 5, "bf16": False}, "reward_funcs": ["a", "b"]}
FLAT = {
    "trainer": "grpo",
    "train.lr": 1e-5,
    "train.steps": 5,
    "train.bf16": False,
    "reward_funcs": '["a", "b"]',
}


def _run_twice(run, report_to):
    """Steps 1..5, killed, resumed from the step-3 checkpoint: steps 4..5 logged again (x10)."""
    with Tracker(run, total_steps=5, report_to=report_to, config=CONFIG) as tr:
        for step in range(1, 6):
            tr.log(step, {"loss": float(step), "note": "text", "done": False})
    with Tracker(run, total_steps=5, start_step=3, report_to=report_to, config=CONFIG) as tr:
        for step in range(4, 6):
            tr.log(step, {"loss": 10.0 * step})


def test_tensorboard_scalars_config_and_resume_purge(tmp_path, plain):
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _run_twice(run, ["tensorboard"])
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    # the resume dropped the killed run's steps 4..5, and kept the checkpoint's step 3
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50)]
    assert events.Tags()["scalars"] == ["loss"] and events.Tags()["tensors"] == []  # numbers only
    # the config, flattened, logged once as hparams (accelerate writes a copy as hparams.yml)
    hparams = sorted((run / "tb").glob("*/hparams.yml"))
    assert len(hparams) == 1
    assert yaml.safe_load(hparams[0].read_text()) == FLAT


def test_mlflow_file_store_one_run_across_resume(tmp_path, monkeypatch, plain):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database otherwise
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    _run_twice(run, "mlflow")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("telos").experiment_id])
    assert len(runs) == 1  # the resume reopened the saved run
    (mlrun,) = runs
    assert (run / "mlflow_run_id").read_text() == mlrun.info.run_id
    assert mlrun.info.run_name == "run"
    assert mlrun.data.params == {k: str(v) for k, v in FLAT.items()}  # MLflow stores params as text
    assert mlrun.data.metrics == {"loss": 50.0}
    # MLflow cannot delete logged points: steps 4..5 keep the killed run's values beside the new
    history = client.get_metric_history(mlrun.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (4, 40),
        (5, 5),
        (5, 50),
    ]


def test_non_tty_output_is_sparse_and_readable(tmp_path, plain, capsys):
    with Tracker(tmp_path, total_steps=200, progress_keys=["loss", "reward"]) as tr:
        for step in range(1, 201):
            tr.log(step, {"loss": 1.0 / step, "reward": step / 200, "other": 1.0})
    err = capsys.readouterr().err.strip().splitlines()
    assert 10 <= len(err) <= 12, err  # start + every 10 %
    assert err[0].startswith("train: starting")
    assert "100/200 (50%)" in "\n".join(err)
    last = err[-1]
    assert last.startswith("train: 200/200 (100%)")
    assert "eta" in last and "loss=0.005" in last and "reward=1" in last
    assert "other" not in last


def test_live_bar_on_a_terminal(tmp_path, terminal):
    with Tracker(tmp_path, total_steps=20, progress_keys=["loss"], description="grpo") as tr:
        for step in range(1, 21):
            tr.log(step, {"loss": 0.123456})
    out = terminal.getvalue()
    assert "grpo" in out and "20/20" in out and "loss=0.1235" in out


def test_progress_helper(plain, capsys):
    items = list(range(50))
    assert [x for x in progress(items, "eval")] == items
    err = capsys.readouterr().err.splitlines()
    assert 2 <= len(err) <= 12 and err[-1].startswith("eval: 50/50 (100%)")

    with progress(4, "generate") as p:
        for _ in range(4):
            p.advance(acc=0.5)
    assert capsys.readouterr().err.splitlines()[-1].startswith("generate: 4/4 (100%)")

    # unknown length: a start line and a final count
    assert sum(progress((i for i in range(7)), "stream")) == 21
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("stream: starting") and err[-1].startswith("stream: 7 |")


def test_progress_helper_on_a_terminal_nested_in_training(tmp_path, terminal):
    with Tracker(tmp_path, total_steps=2) as tr:
        tr.log(1, {})
        assert list(progress(range(3), "eval")) == [0, 1, 2]  # a second bar, no LiveError
        tr.log(2, {})
    assert "eval" in terminal.getvalue()


def test_read_metrics_missing_file(tmp_path):
    with pytest.raises(UserError, match="metrics file not found"):
        read_metrics(tmp_path / "nope.jsonl")


def test_plots_write_pngs_and_skip_missing_keys(tmp_path):
    metrics = [{"step": s, "reward_mean": s / 40, "accuracy": 0.5 + s / 100} for s in range(1, 41)]
    metrics.append({"step": 40, "eval_accuracy": 0.9})
    groups = {
        "reward": ["reward_mean"],
        "accuracy": ["accuracy", "eval_accuracy", "not_logged"],
        "kl": ["kl"],  # no data: no file
    }
    paths = plot_metrics(metrics, tmp_path / "plots", groups)
    assert [p.name for p in paths] == ["reward.png", "accuracy.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "plots" / "kl.png").exists()
    assert plot_metrics([], tmp_path / "empty", groups) == []
    assert not (tmp_path / "empty").exists()

    out = bar_chart(
        {"wood": 0.9, "stone_pickaxe": 0.4, "iron": 0.0}, tmp_path / "s" / "bar.png", "success", "rate"
    )
    assert out.read_bytes()[:8] == PNG_MAGIC
