"""The multi-sweep driver on a simulated engine (deterministic, in process): free places go
round-robin by age, every sweep keeps its own numbers and budget, and no sweep passes its cap."""

from __future__ import annotations

from harness.builder import assemble
from harness.drivers.multi import MultiSweepDriver, SharedEngine
from harness.engines.simulated import SimulatedEngine
from harness.spec import load_spec
from harness.surrogate import Curve
from harness.tracking import NullTracker
from harness.tuners.random import RandomTuner


class BrokenTuner(RandomTuner):
    """Random search whose third ask raises (a tuner's own bug)."""

    asks = 0

    def ask(self, n: int):  # noqa: ANN201
        self.asks += 1
        if self.asks == 3:
            raise RuntimeError("tuner bug")
        return super().ask(n)


def _run(sweeps: int, budget: int, workers: int, cap: int,
         broken: int | None = None) -> tuple[list[int], list, list[int]]:
    spec = load_spec("branin")
    engine = SimulatedEngine(lambda task: Curve([(1, 0.5, {"value": 1.0})], 1.0, 1, {"value": 1.0}),
                       workers=workers, charge_tuner_time=False)
    shared = SharedEngine(engine)
    order: list[int] = []
    most: list[int] = [0] * sweeps

    def opener(seed: int):  # noqa: ANN202
        def open_(view):  # noqa: ANN001, ANN202
            submit = view.submit

            def counted(task):  # noqa: ANN001, ANN202
                order.append(seed)
                out = submit(task)
                most[seed] = max(most[seed], len(view.ids))
                return out

            view.submit = counted
            tuner = (BrokenTuner if seed == broken else RandomTuner)(spec, seed=seed)
            return assemble(spec, tuner, NullTracker(), view, budget=budget,
                            seed=seed, clock=engine.clock)
        return open_

    closed: list = []
    multi = MultiSweepDriver(shared, [opener(s) for s in range(sweeps)], cap=cap, close=closed.append)
    engine.start("none")
    multi.run()
    return order, closed, most


def test_free_places_go_round_robin_by_age() -> None:
    order, closed, _ = _run(sweeps=3, budget=3, workers=1, cap=1)
    assert order == [0, 1, 2] * 3  # not sweep 0's three trials first
    for s in closed:
        assert s.recorder.stats.finished == 3
        assert sorted(r.number for r in s.recorder.stats.results) == [0, 1, 2]  # its own numbers


def test_no_sweep_passes_its_cap_on_a_larger_engine() -> None:
    _, closed, most = _run(sweeps=2, budget=6, workers=8, cap=2)
    assert most == [2, 2]  # 8 free places, but each sweep keeps to its --workers
    assert [s.recorder.stats.finished for s in closed] == [6, 6]


def test_a_sweeps_own_error_ends_it_alone() -> None:
    _, closed, _ = _run(sweeps=3, budget=4, workers=2, cap=1, broken=1)
    by_seed = {s.driver.seed: s for s in closed}
    assert by_seed[1].error == "RuntimeError: tuner bug" and by_seed[1].status == "FAILED"
    st = by_seed[1].recorder.stats  # asks: trial 0, trial 1 ahead, then the bug while 1 runs
    assert (st.finished, st.interrupted) == (1, 1)  # 0 stays recorded; 1 runs again on resume
    for seed in (0, 2):  # the others went on to their budget
        assert by_seed[seed].error is None and by_seed[seed].recorder.stats.finished == 4
        assert by_seed[seed].status == "FINISHED"


def test_ctrl_c_after_the_timeout_still_interrupts_the_running_trials() -> None:
    """--timeout stops dispatching and lets the running trials finish; a Ctrl-C after that must
    still stop them now and end the sweep interrupted (exit 130, resumable), not finished."""
    from harness.trials import INTERRUPTED, TrialState

    spec = load_spec("branin")
    long = Curve([(s, 10.0 * s, {"value": 1.0}) for s in range(1, 11)], 100.0, 10, {"value": 1.0})
    engine = SimulatedEngine(lambda task: long, workers=2, charge_tuner_time=False)
    sweep = assemble(spec, RandomTuner(spec, seed=0), NullTracker(), engine, budget=6, seed=0,
                     timeout=5.0, clock=engine.clock)
    driver, rec = sweep.driver, sweep.recorder
    engine.start("none")
    while driver.step():  # until the timeout has stopped dispatching (2 trials running)
        for event in engine.poll(0.05):
            driver.handle(event)
        if rec.should_stop():
            break
    assert rec.should_stop().startswith("timeout") and len(driver.tasks) == 2
    rec.request_stop()  # Ctrl-C
    assert rec.interrupted and rec.should_stop() == INTERRUPTED
    while driver.step():
        for event in engine.poll(0.05):
            driver.handle(event)
    results = rec.stats.results
    assert len(results) == 2 and all(r.state is TrialState.FAILED and r.interrupted for r in results)
    assert all(r.steps < 10 for r in results)  # stopped at a report, not run to their end


def test_concurrent_sweeps_on_cpu_get_their_own_worker_processes() -> None:
    """``--workers 1 --concurrent 2``: two sequential sweeps on two processes (one thread each),
    not two sweeps taking turns on one process of two threads; more --concurrent than sweeps adds
    nothing; without --concurrent, or on GPUs, the sweeps share the --workers places."""
    from harness.compare.benchmark import shared_places

    assert shared_places(["cpu"], 2, 50) == ["cpu", "cpu"]
    assert shared_places(["cpu", "cpu"], 3, 50) == ["cpu"] * 6
    assert shared_places(["cpu"], 8, 3) == ["cpu"] * 3
    assert shared_places(["cpu", "cpu"], None, 50) == ["cpu", "cpu"]
    assert shared_places(["cuda:0", "cuda:1"], 4, 50) == ["cuda:0", "cuda:1"]
