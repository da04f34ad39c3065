"""The embedded MLflow store: WAL mode on the MLflow file only, and nothing lost by it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from harness.tracking import MLflowTracker


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_the_mlflow_sqlite_store_is_in_wal_mode_and_other_sqlite_files_are_not(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri)
    client = MlflowClient(uri)  # any connection to that file, as the tracker's own client makes
    exp = client.create_experiment("wal")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    client.set_terminated(run.info.run_id)
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    assert journal_mode(tmp_path / "mlflow.db") == "wal"  # persistent: a property of the file
    assert journal_mode(tmp_path / "optuna.db") != "wal"
    # everything committed is there for a new reader, WAL or not
    again = MlflowClient(uri).get_run(run.info.run_id)
    assert again.data.metrics["loss"] == 0.5 and again.info.status == "FINISHED"
    assert tracker.uri == uri
