"""The sweep's write-ahead event log read back: the one reader of ``events.jsonl``.

:class:`harness.recorder.Recorder` writes the log, one JSON line per trial event, before the
tracker hears of it: ``started`` (number, params, seed and the driver's own ``key`` of the trial)
and ``finished`` (:meth:`harness.trials.TrialResult.record` and the ``key``); other lines (a
multi-objective sweep's ``note`` s) are not trial events. It lives apart from the recorder so
that a backend's resume can read it and still import only the spec and the trial types (Ray
Tune keeps no trial record of ours: its restore reads this log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.files import read_jsonl
from harness.trials import EVENT_LOG

TRIAL_EVENTS = ("started", "finished")


def read_events(state_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The event log of the sweep in ``state_dir``, by key (the driver's id of the trial, else its
    number): each trial's last ``started`` record, and its ``finished`` one. A torn last line (a
    killed driver) must be moved aside first (:func:`harness.files.repair_jsonl`)."""
    started: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(state_dir / EVENT_LOG):
        event = rec.get("event")
        if event not in TRIAL_EVENTS:
            continue
        key = str(rec.get("key", rec.get("number")))
        (started if event == "started" else finished)[key] = rec
    return started, finished


__all__ = ["TRIAL_EVENTS", "read_events"]
