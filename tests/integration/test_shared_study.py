"""Several harness processes share one Optuna study on PostgreSQL and one real MLflow server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import MlflowServer, harness_env

SPACE = """
objective: tests.objectives:sleepy
metric: {name: value, goal: minimize}
fixed: {steps: 2, pause: 0.02}
params:
  x: {type: float, low: -1.0, high: 1.0}
budget: {trials: 25}
"""


@pytest.fixture
def pg_pair(postgres_db):
    """Two databases on the real PostgreSQL server: the study's and MLflow's backend store."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    mlflow_db = postgres_db + "_mlflow"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{mlflow_db}"')
    try:
        yield postgres_db, mlflow_db
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{mlflow_db}" WITH (FORCE)')
        conn.close()


def test_four_processes_one_study_one_server(tmp_path, write_space, pg_pair):
    study_db, mlflow_db = pg_pair
    server = MlflowServer(f"postgresql://postgres@127.0.0.1:5432/{mlflow_db}", tmp_path / "artifacts").start()
    try:
        space = write_space(SPACE)
        # trust auth accepts any password: this one must never reach a log line or a tag
        storage = f"postgresql://postgres:hunter2secret@127.0.0.1:5432/{study_db}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "optuna",
                 "--storage", storage, "--name", "shared", "--trials", "25", "--workers", "1",
                 "--devices", "cpu", "--tracking-uri", server.url, "--seed", str(i)],
                cwd=tmp_path / f"p{i}" if (tmp_path / f"p{i}").mkdir() is None else tmp_path,
                env=harness_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in range(4)
        ]
        outputs = [p.communicate(timeout=400) for p in procs]
        for p, (out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err[-3000:]
            assert "hunter2secret" not in out + err

        study = optuna.load_study(study_name="shared", storage=storage)
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 100
        assert all(t.state.name == "COMPLETE" for t in trials)
        assert sorted(t.number for t in trials) == list(range(100))

        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("space")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("harness.kind") == "sweep"]
        kids = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
        assert len(parents) == 1, "the processes share one parent run"
        assert len(kids) == 100
        assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
        assert sorted(int(k.data.tags["harness.trial"]) for k in kids) == list(range(100))
        for r in runs:
            blob = " ".join([*r.data.tags.values(), *r.data.params.values()])
            assert "hunter2secret" not in blob
        assert "postgresql://postgres:***@" in parents[0].data.tags["harness.command"]

        # the parent's curves are the study's, not one process's: steps count every process's
        # finished trials, and a later step never has a worse best
        history = client.get_metric_history(parents[0].info.run_id, "best_so_far")
        by_step: dict[int, set[float]] = {}
        for m in history:
            by_step.setdefault(m.step, set()).add(m.value)
        assert all(len(v) == 1 for v in by_step.values()), by_step
        steps = sorted(by_step)
        assert steps[-1] == 100 and len(steps) > 25
        values = [by_step[s].pop() for s in steps]
        assert all(b <= a for a, b in zip(values, values[1:], strict=False)), values
        assert values[-1] == min(k.data.metrics["value"] for k in kids)

        # harness ls shows the whole study's count against each process's budget
        listing = subprocess.run(
            [sys.executable, "-m", "harness.cli", "ls", "--tracking-uri", server.url],
            cwd=tmp_path / "p0", env=harness_env() | {"COLUMNS": "200"}, capture_output=True, text=True,
            timeout=120,
        )
        assert listing.returncode == 0, listing.stderr[-2000:]
        row = next(line for line in listing.stdout.splitlines() if "shared" in line)
        assert "100 / 25 each" in row, listing.stdout
    finally:
        server.stop()


@pytest.mark.slow  # ~35 s; tests/unit/harness/test_tuners.py covers the heartbeat retry in the default run
def test_a_dead_process_trial_is_failed_retried_and_settled(tmp_path, write_space, postgres_db):
    """SIGKILL a process of a shared study while its trial runs: another, by the heartbeats (1 s
    here), fails that trial, runs its configuration again and settles its MLflow run."""
    from harness.tuners.optuna import LOST, OWNER_ATTR

    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts").start()
    space = write_space(SPACE.replace("pause: 0.02", "pause: 1.0").replace("steps: 2", "steps: 4"))
    storage = f"postgresql://postgres@127.0.0.1:5432/{postgres_db}"
    env = harness_env() | {"HARNESS_HEARTBEAT_S": "1"}

    def launch(i: int, trials: int) -> subprocess.Popen:
        (tmp_path / f"p{i}").mkdir()
        return subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "sweep", str(space), "--tuner", "optuna",
             "--storage", storage, "--name", "shared", "--trials", str(trials), "--workers", "1",
             "--devices", "cpu", "--tracking-uri", server.url, "--seed", str(i)],
            cwd=tmp_path / f"p{i}", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )

    # the victim runs alone until it is killed mid-trial; the survivor starts after the kill, so
    # its first ask comes well past the 2 s grace period, whatever the machine's load
    victim, survivor = launch(0, 5), None
    try:
        owner_file = tmp_path / "p0" / ".harness" / "sweeps" / "shared" / "optuna.owner"
        running: list[optuna.trial.FrozenTrial] = []
        deadline = time.time() + 120
        while not running and time.time() < deadline and victim.poll() is None:
            time.sleep(0.3)
            if owner_file.exists():
                owner = owner_file.read_text().strip()
                study = optuna.load_study(study_name="shared", storage=storage)
                running = [t for t in study.get_trials(deepcopy=False)
                           if t.state.name == "RUNNING" and t.user_attrs.get(OWNER_ATTR) == owner]
        assert running, "the victim never ran a trial"
        started = running[0].datetime_start
        time.sleep(max(0.0, 1.2 - (datetime.now() - started).total_seconds()))  # it has beaten
        os.killpg(victim.pid, signal.SIGKILL)
        assert (datetime.now() - started).total_seconds() < 3.5, "killed too late: not mid-trial"
        victim.wait(timeout=30)
        survivor = launch(1, 2)
        out, err = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, err[-3000:]

        trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
        lost = next(t for t in trials if t.number == running[0].number)  # read again: its params
        assert lost.state.name == "FAIL" and lost.params
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
        assert len(retried) == 1 and retried[0].params == lost.params
        assert retried[0].state.name == "COMPLETE"

        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("space")
        kids = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
                if r.data.tags.get("harness.kind") == "trial"]
        mine = [k for k in kids if k.data.tags["harness.trial"] == str(lost.number)]
        assert len(mine) == 1, "the lost trial's run is settled, not written twice"
        assert mine[0].data.tags["harness.state"] == "failed"
        assert mine[0].data.tags["harness.reason"] == LOST
        again = [k for k in kids if k.data.tags["harness.trial"] == str(retried[0].number)]
        assert [k.data.tags["harness.state"] for k in again] == ["complete"]
    finally:
        for p in (victim, survivor):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        server.stop()
