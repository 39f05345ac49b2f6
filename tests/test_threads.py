"""The CPU thread policy (netstudio/training/threads.py) and where it is in force.

The tuner is driven here by a fake clock: each step "takes" what a table says
for the thread count in force, so its choices are checked without timing. The
last tests read what real processes report: a fresh ``netstudio train`` and a
``fit`` with a fixed count.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netstudio.training import threads as T

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_last_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake runs below must not leave their choice to later real runs of this process."""
    monkeypatch.setattr(T, "_last_choice", None)


class FakeTorch:
    """set/get_num_threads and a clock whose steps last ``cost[n]`` seconds at n threads."""

    def __init__(self, cost: dict[int, float], start: int = 2) -> None:
        self.cost = dict(cost)
        self.n = start
        self.now = 0.0
        self.sets: list[int] = []

    def set(self, n: int) -> None:
        self.n = n
        self.sets.append(n)

    def get(self) -> int:
        return self.n

    def clock(self) -> float:
        return self.now

    def tuner(self, requested: int = 0, ceiling: int | None = None, initial: int | None = None) -> T.ThreadTuner:
        return T.ThreadTuner(requested, ceiling, set_threads=self.set, get_threads=self.get, clock=self.clock,
                             initial=initial)

    def train(self, tuner: T.ThreadTuner, epochs: int, steps: int) -> list[int]:
        """Run epochs of steps through the hooks; returns the count in force after each epoch."""
        counts = []
        for _ in range(epochs):
            tuner.epoch_start()
            for _ in range(steps):
                tuner.step_start()
                self.now += self.cost[self.n]
                tuner.step_end()
            counts.append(tuner.threads)
        return counts


def test_candidates_and_first_guess() -> None:
    assert T.candidates(1) == [1]
    assert T.candidates(2) == [1, 2]
    assert T.candidates(6) == [1, 2, 4, 6]
    assert T.candidates(8) == [1, 2, 4, 8]
    assert T.initial_threads(2, busy=0.1, cores=2) == 2
    assert T.initial_threads(2, busy=0.6, cores=2) == 2   # an idle desktop's background noise
    assert T.initial_threads(2, busy=1.0, cores=2) == 1   # a browser spinning one core
    assert T.initial_threads(8, busy=30.0, cores=8) == 1
    assert T.initial_threads(4, busy=0.0, cores=16) == 4  # never above the caller's count


def test_the_faster_count_wins_and_is_applied() -> None:
    fake = FakeTorch({1: 1.0e-3, 2: 0.6e-3})
    tuner = fake.tuner(initial=2)  # the load average said the cores were free: both are tried at once
    assert tuner.mode == "auto" and tuner.guess == 2 and tuner.threads == 1  # 1 until measured
    assert fake.train(tuner, 3, 40) == [2, 2, 2]
    assert tuner.calibrations >= 1 and fake.n == 2 and tuner.history[0]["medians_s"].keys() == {1, 2}
    fake2 = FakeTorch({1: 1.0e-3, 2: 1.4e-3})  # two threads slower (a busy core): one wins
    tuner2 = fake2.tuner(initial=2)
    assert fake2.train(tuner2, 3, 40) == [1, 1, 1]
    tuner2.close()
    assert fake2.n == 2  # the caller's count is handed back


def test_counts_within_the_probes_noise_keep_the_fewer_threads() -> None:
    # the MNIST MLP on the idle 2-core machine: 2 threads measured ~3 % faster, within what six probe
    # steps can tell apart; one thread is kept (it leaves a core to the desktop and cannot stall)
    fake = FakeTorch({1: 1.03e-3, 2: 1.0e-3})
    assert fake.train(fake.tuner(initial=2), 3, 40) == [1, 1, 1]
    fake = FakeTorch({1: 1.10e-3, 2: 1.0e-3})  # a real gain (10 %) still goes to two threads
    assert fake.train(fake.tuner(initial=2), 3, 40) == [2, 2, 2]


def test_a_clear_first_round_ends_the_calibration() -> None:
    # LeNet at batch 512 on the idle 2-core machine: one thread 1.6x slower, 10 steps per epoch; a second
    # round would only add steps at one thread to a 20-step run
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(initial=2)
    assert _steps_at(fake, tuner, 2, 10, 1) == 1 + (T.ThreadTuner.PROBE_STEPS + 1)  # warm-up + one round
    assert tuner.threads == 2 and tuner.calibrations >= 1
    # short steps (timing noise) or counts close together: both rounds, as before
    for cost in ({1: 1.0e-3, 2: 0.6e-3}, {1: 44e-3, 2: 40e-3}):
        fake = FakeTorch(cost)
        tuner = fake.tuner(initial=2)
        assert _steps_at(fake, tuner, 2, 10, 1) == 1 + 2 * (T.ThreadTuner.PROBE_STEPS + 1)


def test_a_run_too_short_to_calibrate_trains_at_the_first_guess() -> None:
    # LeNet at batch 512, one epoch: 10 steps, of which a calibration would take 8 (half at one thread)
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(initial=2)
    assert tuner.expect_steps(10) and tuner.mode == "auto"
    assert _steps_at(fake, tuner, 1, 10, 2) == 10 and tuner.calibrations == 0
    busy = FakeTorch({1: 1.0e-3, 2: 25e-3})  # a core is taken: the guess is one thread, kept
    tuner = busy.tuner(initial=1)
    assert tuner.expect_steps(10)
    assert _steps_at(busy, tuner, 1, 10, 2) == 0
    # long enough: calibrated as before
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(initial=2)
    assert not tuner.expect_steps(200)
    assert fake.train(tuner, 2, 100) == [2, 2] and tuner.calibrations >= 1
    fixed = FakeTorch({1: 1.0e-3, 2: 0.6e-3}).tuner(requested=1)
    assert not fixed.expect_steps(10) and fixed.threads == 1


def _steps_at(fake: FakeTorch, tuner: T.ThreadTuner, epochs: int, steps: int, n: int) -> int:
    """Train like FakeTorch.train; returns how many steps ran at ``n`` threads."""
    count = 0
    for _ in range(epochs):
        tuner.epoch_start()
        for _ in range(steps):
            tuner.step_start()
            count += fake.n == n
            fake.now += fake.cost[fake.n]
            tuner.step_end()
    return count


def test_a_busy_machine_never_pays_for_a_stalled_team_early() -> None:
    # 2 threads on a loaded machine: 25x slower per step (issue 10); the load average says one core is busy
    fake = FakeTorch({1: 1.0e-3, 2: 25e-3}, start=2)
    tuner = fake.tuner(initial=1)
    assert _steps_at(fake, tuner, 5, 80, 2) == 0  # 400 steps: 2 threads not even probed
    assert tuner.threads == 1 and tuner.calibrations >= 1 and tuner.probe_cost == 0.0
    # once 3 % of the time spent covers one stalled step, 2 threads are tried: one step, then dropped
    assert _steps_at(fake, tuner, 10, 80, 2) == 1
    assert tuner.threads == 1 and tuner.probe_cost == pytest.approx(24e-3, rel=0.1)


def test_a_stale_load_average_costs_one_slow_step_not_an_epoch() -> None:
    # the load average still says idle, but a core is busy now: 2 threads are tried at once
    fake = FakeTorch({1: 1.0e-3, 2: 25e-3})
    tuner = fake.tuner(initial=2)
    # the first (untimed) step at 2 in the calibration is enough to drop it
    assert _steps_at(fake, tuner, 1, 80, 2) == 1
    assert tuner.threads == 1
    before = tuner.calibrations  # the probing budget postpones the next try instead of paying it each epoch
    assert _steps_at(fake, tuner, 3, 80, 2) == 0 and tuner.calibrations >= before


def test_load_that_goes_away_is_noticed_later() -> None:
    fake = FakeTorch({1: 1.0e-3, 2: 1.5e-3})
    tuner = fake.tuner(initial=2)
    assert fake.train(tuner, 1, 60) == [1]
    fake.cost = {1: 1.0e-3, 2: 0.5e-3}  # the other program ended
    # 2 threads are tried again once the budget covers one stalled step (~25 steps' time in 3 %)
    assert fake.train(tuner, 20, 60)[-1] == 2


def test_load_arriving_mid_epoch_is_noticed_within_that_epoch() -> None:
    fake = FakeTorch({1: 1.0e-3, 2: 0.6e-3})
    tuner = fake.tuner(initial=2)
    tuner.epoch_start()

    def step() -> None:
        tuner.step_start()
        fake.now += fake.cost[fake.n]
        tuner.step_end()

    while tuner.calibrations == 0:
        step()
    assert tuner.threads == 2
    for _ in range(200):  # no load: no more calibrations (the next epoch start would check again)
        step()
    assert tuner.calibrations == 1
    fake.cost = {1: 1.0e-3, 2: 20e-3}  # another program takes a core; the epoch goes on
    for _ in range(30):
        step()
    assert tuner.calibrations == 2 and tuner.threads == 1 and fake.n == 1


def test_a_later_run_starts_from_the_last_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # right after a two-thread run the load average counts this process's own threads as busy
    monkeypatch.setattr(T, "busy_cores", lambda *a, **k: 2.0)
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    monkeypatch.setattr(T, "_last_choice", None)
    fake = FakeTorch({1: 1.0e-3, 2: 0.6e-3})
    assert fake.tuner(ceiling=2).guess == 1
    monkeypatch.setattr(T, "_last_choice", 2)
    assert fake.tuner(ceiling=2).guess == 2
    assert fake.tuner(ceiling=1).guess == 1


def test_a_fixed_count_is_never_changed() -> None:
    fake = FakeTorch({1: 1.0e-3, 2: 0.1e-3})
    tuner = fake.tuner(requested=1)
    assert tuner.mode == "fixed" and not tuner.adaptive
    assert fake.train(tuner, 2, 50) == [1, 1]
    assert fake.sets == [1]
    assert T.describe(1, tuner.mode) == "1 thread (fixed)"
    assert T.describe(2, "auto") == "2 threads (automatic)"
    one_core = fake.tuner(ceiling=1)
    assert one_core.mode == "default" and one_core.threads == 1


def test_fit_applies_a_fixed_count_and_restores_the_callers(one_thread: None) -> None:
    import torch

    from netstudio.compiler.build import build_plan
    from netstudio.data import load
    from netstudio.graph.model import Graph
    from netstudio.training import TrainConfig, fit

    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    lin = g.add_node("layer.linear", {"out_features": 3})
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node("optim.adam", {"lr": 0.05})
    g.connect(d.id, "features", lin.id, "input")
    g.connect(lin.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(ce.id, "loss", op.id, "loss")
    plan = build_plan(g, 16)
    seen: list[int] = []

    def report(ev: dict) -> None:
        if ev["kind"] in ("start", "epoch"):
            seen.append(ev["threads"])
            seen.append(torch.get_num_threads())

    res = fit(plan, load(plan.dataset_params), TrainConfig(epochs=2, batch_size=16, device="cpu", threads=2),
              report)
    assert res.status == "finished"
    assert seen == [2, 2, 2, 2, 2, 2]  # start + 2 epochs: reported and in force
    assert res.metrics["threads"] == 2 and res.metrics["threads_mode"] == "fixed"
    assert torch.get_num_threads() == 1  # the fixture's count again


@pytest.mark.slow  # subprocess, end to end
def test_a_fresh_netstudio_train_reports_the_policy_in_force(tmp_path: Path) -> None:
    """A new process, as a user starts it: the JSON line and the header name the thread count."""
    from netstudio.graph.model import Graph
    from netstudio.project.io import Project, save_project
    from netstudio.training import TrainConfig

    g = Graph()
    d = g.add_node("data.dataset", {"source": "iris"})
    lin = g.add_node("layer.linear", {"out_features": 3})
    ce = g.add_node("loss.cross_entropy")
    op = g.add_node("optim.sgd", {"lr": 0.1})
    g.connect(d.id, "features", lin.id, "input")
    g.connect(lin.id, "output", ce.id, "prediction")
    g.connect(d.id, "target", ce.id, "target")
    g.connect(ce.id, "loss", op.id, "loss")
    proj = save_project(Project(g, TrainConfig(epochs=6, batch_size=8, device="cpu")), tmp_path / "iris.nsproj")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "netstudio", "train", str(proj), "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    cores = T.cpu_cores()
    n = summary["threads"]
    assert isinstance(n, int) and 1 <= n <= cores
    if cores > 1:  # torch's default is one thread per core: the count adapts
        assert summary["threads_mode"] == "auto"
        assert summary["thread_calibrations"] >= 1  # 6 epochs of 15 steps: the first calibration finished
    assert all(isinstance(e["threads"], int) and 1 <= e["threads"] <= cores for e in summary["history"])
    header = proc.stderr.splitlines()[0]
    assert re.fullmatch(rf"training 6 epochs on cpu, [1-{cores}] threads? \((automatic|the caller's)\)", header), header


def test_busy_cores_sees_a_spinning_program_and_not_this_process() -> None:
    """The first guess reads what other programs use now (/proc/stat), not the lagging load average."""
    import subprocess
    import sys

    if T._cpu_times() is None:
        pytest.skip("no /proc/stat")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time as _t

        _t.sleep(0.5)
        busy = T.busy_cores(0.3)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.6, busy  # one core kept busy by another program
    # this process busy itself: its own CPU time is not counted as another program's
    import threading

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    th = threading.Thread(target=spin)
    th.start()
    try:
        mine = T.busy_cores(0.3)
    finally:
        stop.set()
        th.join()
    assert mine < busy, (mine, busy)


def test_the_load_is_measured_while_the_run_sets_up_not_in_a_pause_before_it(monkeypatch: pytest.MonkeyPatch
                                                                            ) -> None:
    """Creating the tuner only starts the /proc/stat window; the guess is read at the second step."""
    calls: list[object] = []
    monkeypatch.setattr(T, "busy_cores", lambda *a, since=None, **k: calls.append(since) or 0.0)
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    monkeypatch.setattr(T, "_window", None)  # no recent window (an app's run long after the last)
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(ceiling=2)
    assert calls == [] and tuner.threads == 1
    tuner.epoch_start()
    tuner.step_start()  # the first step: never timed, no guess needed yet
    fake.now += fake.cost[fake.n]
    tuner.step_end()
    assert calls == []
    tuner.step_start()  # the calibration begins: now the guess is read, over the window since setup
    assert len(calls) == 1 and isinstance(calls[0], T.LoadSample)
    # a short run: the first step at one thread, the guess from the second on
    calls.clear()
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(ceiling=2)
    assert tuner.expect_steps(10) and calls == [] and tuner.mode == "auto"
    assert _steps_at(fake, tuner, 1, 10, 2) == 9 and len(calls) == 1 and tuner.threads == 2


def test_a_window_already_long_enough_is_read_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    if T._cpu_times() is None:
        pytest.skip("no /proc/stat")
    waits: list[float] = []
    monkeypatch.setattr(T.time, "sleep", waits.append)
    start = T.LoadSample()
    T.busy_cores()  # a fresh window waits out SAMPLE_S
    assert len(waits) == 1 and 0 < waits[0] <= T.SAMPLE_S
    waits.clear()
    start.t0 -= T.SAMPLE_S  # as if the run had set up for longer than the window
    assert T.busy_cores(since=start) >= 0.0 and waits == []


def test_a_short_fit_takes_the_first_guess_from_its_second_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine drives the hooks of a short run until the guess is in force (it once stayed at one)."""
    import torch

    from netstudio.training import fit
    from test_training import blobs, cfg, classifier_plan

    monkeypatch.setattr(T, "busy_cores", lambda *a, **k: 0.0)  # an idle machine with two free cores
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = fit(classifier_plan(batch_size=200), blobs(600, 0), cfg(epochs=2, threads=0, stats_every=0),
                  report=lambda e: seen.append(torch.get_num_threads()) if e["kind"] == "batch" else None)
        assert torch.get_num_threads() == 2  # the caller's count back afterwards
    finally:
        torch.set_num_threads(before)
    assert res.status == "finished"
    assert res.metrics["threads"] == 2 and res.metrics["threads_mode"] == "auto"  # 6 steps: too short to probe
    assert res.metrics["thread_calibrations"] == 0


def test_a_run_soon_after_import_or_the_last_run_reads_its_guess_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI run: the window opened at import has run through data loading and compiling (≥ SAMPLE_S)."""
    if T._cpu_times() is None:
        pytest.skip("no /proc/stat")
    calls: list[object] = []
    monkeypatch.setattr(T, "busy_cores", lambda *a, since=None, **k: calls.append(since) or 0.0)
    monkeypatch.setattr(T, "cpu_cores", lambda: 2)
    window = T.LoadSample()
    window.t0 -= 1.0  # opened a second ago
    monkeypatch.setattr(T, "_window", window)
    fake = FakeTorch({1: 64e-3, 2: 40e-3})
    tuner = fake.tuner(ceiling=2)
    assert calls == [window] and tuner.guess == 2
    assert tuner.expect_steps(10)
    assert _steps_at(fake, tuner, 1, 10, 2) == 10  # a short run at the guess from its first step
    tuner.close()
    assert T._window is not window and T.recent_window() is None  # reopened as the run ended: too fresh
    stale = T.LoadSample()
    stale.t0 -= T.RECENT_S + 1
    monkeypatch.setattr(T, "_window", stale)
    assert T.recent_window() is None  # too old to describe the machine now
