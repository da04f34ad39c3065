"""The harness's files (harness/files.py) and the recorder's write-ahead event log: written whole
or not at all, appended durably through the recorder's own open handle, read back with a torn
tail repaired, and one driver per sweep folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from harness.files import StateFileError, SweepLock, read_jsonl, repair_jsonl, write_atomic
from tests.conftest import harness_env


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "state.json"
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}'
    write_atomic(tmp_path / "ckpt.pt", b"\x00\x01")
    assert (tmp_path / "ckpt.pt").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ckpt.pt", "state.json"]


def test_the_atomic_writer_never_shares_a_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(50):
                write_atomic(path, json.dumps({"writer": i, "j": j}))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(path.read_text())["j"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_repair_moves_a_torn_tail_aside_and_refuses_a_damaged_middle(tmp_path):
    path = tmp_path / "log.jsonl"
    whole = [{"a": 1}, {"b": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + '{"c": 3, "d"')
    message = repair_jsonl(path)
    assert message and "moved it aside" in message and "2 complete records" in message
    assert [json.loads(x) for x in path.read_text().splitlines()] == whole
    backups = list(tmp_path.glob("log.jsonl.torn-*"))
    assert len(backups) == 1 and backups[0].read_text() == '{"c": 3, "d"'
    assert repair_jsonl(path) is None  # nothing left to do
    path.write_text('{"a": 1}\n{"b": 2}')  # a whole record without its newline is kept
    assert repair_jsonl(path) is None and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    path.write_text('{"a": 1}\n{"b"\n{"c": 3}\n')
    with pytest.raises(StateFileError, match="line 2 of 3 is not a JSON record"):
        repair_jsonl(path)
    assert path.read_text() == '{"a": 1}\n{"b"\n{"c": 3}\n', "nothing is changed when refused"


def test_a_lock_is_exclusive_per_process_and_freed_when_its_process_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from harness.files import SweepLock;"
         f"l = SweepLock(Path({str(tmp_path)!r})); print(l.acquire(), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=harness_env())
    assert holder.stdout.readline().strip() == "True"
    lock = SweepLock(tmp_path)
    assert not lock.acquire() and lock.holder() == str(holder.pid)
    holder.kill()
    holder.wait()
    assert lock.acquire(), "the kernel frees the lock of a dead process"
    lock.release()


def test_the_recorders_event_log_reaches_the_kernel_at_once_and_survives_a_torn_tail(tmp_path):
    """The recorder writes ``events.jsonl`` through its own open handle: every started / finished
    record must be readable by another process while the recorder still lives (a resume after a
    SIGKILL reads it), and after a crash mid-write the torn tail is moved aside and a resumed
    recorder appends on a fresh line."""
    from harness.recorder import Recorder
    from harness.spec import load_spec
    from harness.tracking import NullTracker
    from harness.trials import EVENT_LOG, Done, TrialTask

    spec = load_spec("branin")
    log = tmp_path / EVENT_LOG
    rec = Recorder(spec, NullTracker(), budget=3, state_dir=tmp_path)
    task = TrialTask(0, spec.objective, {"x1": 0.5, "x2": 0.25}, {}, seed=63352)
    rec.started(task, "cpu")
    rec.finished(Done(0, "ok", {"value": 1.25}, steps=7, seconds=0.5), task)
    assert rec._log_file is not None and not rec._log_file.closed, "the handle stays open between events"
    read = subprocess.run([sys.executable, "-c", f"print(open({str(log)!r}).read(), end='')"],
                          capture_output=True, text=True, timeout=30, check=True)
    records = [json.loads(line) for line in read.stdout.splitlines()]
    assert [r["event"] for r in records] == ["started", "finished"]
    assert records[0] == {"event": "started", "number": 0, "params": {"x1": 0.5, "x2": 0.25}, "seed": 63352}
    fin = records[1]
    assert (fin["state"], fin["value"], fin["steps"], fin["seconds"], fin["seed"]) == ("complete", 1.25, 7, 0.5, 63352)

    rec.close()
    with open(log, "a") as f:  # as if the driver had been killed mid-write of its next record
        f.write('{"event": "started", "number": 1, "par')
    assert "moved it aside" in (repair_jsonl(log) or "")
    assert read_jsonl(log) == records
    again = Recorder(spec, NullTracker(), budget=3, state_dir=tmp_path)  # the resumed driver
    again.started(TrialTask(1, spec.objective, {"x1": 0.0, "x2": 1.0}, {}, seed=7), "cpu")
    again.close()
    assert [(r["event"], r["number"]) for r in read_jsonl(log)] == [("started", 0), ("finished", 0), ("started", 1)]
