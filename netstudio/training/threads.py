"""CPU thread policy: how many intra-op threads torch trains with, chosen by measuring.

Why: a desktop always has another program running. torch computes with one
OpenMP thread per core, and OpenMP threads spin at the end of every parallel
region until the whole team arrives. When another process holds one of the
cores, the team waits for a thread the OS has descheduled at every op: on the
project's 2-core machine with one core busy, the MNIST MLP sample ran 20-30x
slower with torch's default two threads than with one (issue 10; bench B6).
On an idle machine, two threads are as fast or faster (LeNet at batch 512:
~1.6x), so no fixed count is right everywhere.

:class:`ThreadTuner` therefore times real training steps: a short calibration
over the first steps tries 1, 2, 4, … up to the caller's thread count, keeps the
fastest, and repeats at each epoch start, every ``RECHECK_S`` within long
epochs and at once when steps become ``SLOWDOWN`` times slower than measured
(load arrived), as long as probing stays within ``BUDGET`` of the training time. A
count that is clearly worse (a descheduled team) is dropped after one step, so
a probe under load costs a step or two, not an epoch. The user overrides it
with a fixed count (``--threads N``, the project's ``TrainConfig.threads``).

The OpenMP wait policy is left to the user: ``OMP_WAIT_POLICY=PASSIVE`` (idle
threads sleep at once) made two-thread training up to ~17 % slower on the idle
machine (LeNet at batch 512) and one thread under load was still faster than two
passive ones, so the count, not the wait policy, is what adapts (bench/README.md, B6).

Every entry point trains through ``fit``, which creates the tuner before the
run's first torch op: ``netstudio train``, each ``--nproc`` rank (one thread per
rank from the launcher's ``OMP_NUM_THREADS=1``, or ``--threads N``) and the app's
training worker (whose ceiling is the count the dock reserves for workers). The
exported ``train.py`` carries its own small version (script_export.py).

Qt-free; torch is imported inside functions only.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: how long :func:`busy_cores` watches the machine before training starts
SAMPLE_S = 0.1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from /proc/stat; None where there is no such file."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


class LoadSample:
    """The start of a :func:`busy_cores` window: the machine's and this process's CPU time now.

    Started when a run is set up and read when the first guess is needed (the second step), so
    the window covers work the run does anyway instead of a pause before training.
    """

    def __init__(self) -> None:
        self.cpu = _cpu_times()
        self.own = time.process_time()
        self.t0 = time.perf_counter()


def busy_cores(sample_s: float | None = None, since: LoadSample | None = None) -> float:
    """Cores other programs keep busy right now (0 where that cannot be told).

    Linux: the machine's CPU time over a short window (:data:`SAMPLE_S`, or from ``since`` until
    now, waiting out the rest of that window when less has passed) less this process's own, in
    cores. The 1-minute load average is only the fallback: it lags by a minute, so right after one
    training run (or with this process's own threads running) it calls an idle machine busy and the
    next run would keep to one thread.
    """
    window = SAMPLE_S if sample_s is None else sample_s
    start = since if since is not None else LoadSample()
    first = start.cpu
    if first is not None and window > 0:
        rest = window - (time.perf_counter() - start.t0)
        if rest > 0:
            time.sleep(rest)
        second, own1, t1 = _cpu_times(), time.process_time(), time.perf_counter()
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])  # of all cores
            own = (own1 - start.own) / max(t1 - start.t0, 1e-6)  # cores this process used meanwhile
            return max(0.0, share * cpu_cores() - own)
    try:
        return max(0.0, float(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


#: a window opened when this module was imported (refreshed as each run ends): when a run starts between
#: SAMPLE_S and RECENT_S later (a CLI run: import, data, compile, then fit), its first guess is read at once
_window: LoadSample | None = LoadSample()
RECENT_S = 10.0


def recent_window() -> LoadSample | None:
    """The open window when it is long enough to read and recent enough to describe the machine now."""
    w = _window
    if w is None or w.cpu is None:
        return None
    age = time.perf_counter() - w.t0
    return w if SAMPLE_S <= age <= RECENT_S else None


def initial_threads(ceiling: int, busy: float | None = None, cores: int | None = None) -> int:
    """A first guess before anything is measured: the cores not busy with other programs, 1…ceiling.

    A core counts as busy from 0.7 on (a program spinning on it measures 1.0; an idle
    desktop's background noise stays below).
    """
    cores = cpu_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, min(ceiling, cores - int(busy + 0.3)))


#: the count the last calibration in this process chose: a second run (the app trains many) starts
#: from it, since the load average then still counts this process's own training threads as busy
_last_choice: int | None = None


def candidates(ceiling: int) -> list[int]:
    """Thread counts worth trying: 1, 2, 4, … and the ceiling itself."""
    out, n = [], 1
    while n < ceiling:
        out.append(n)
        n *= 2
    out.append(max(1, ceiling))
    return out


MODES = {"auto": "automatic", "fixed": "fixed", "default": "the caller's"}


def describe(threads: int, mode: str) -> str:
    """'2 threads (automatic)' / '1 thread (fixed)' for run headers; ``mode`` as in :attr:`ThreadTuner.mode`."""
    return f"{threads} thread{'s' if threads != 1 else ''} ({MODES.get(mode, mode)})"


class ThreadTuner:
    """Chooses and applies the fastest intra-op thread count by timing training steps.

    ``requested`` > 0: always that many (the user's choice), nothing is measured.
    Otherwise the count adapts between 1 and ``ceiling`` (default: torch's current
    count, i.e. what the caller allows). Not adaptive: ``adaptive=False`` (GPU
    training, distributed ranks) or a ceiling of 1.

    The training loop calls :meth:`epoch_start` at every epoch and wraps every
    step in :meth:`step_start` / :meth:`step_end`; outside a calibration these
    return at once. :meth:`close` puts torch's count back to what it was.
    """

    #: timed steps per candidate and round (after one untimed step at the new count)
    PROBE_STEPS = 3
    #: rounds over the candidates (the second in reverse order, against drift)
    ROUNDS = 2
    #: a candidate whose step takes this many times the best median so far is dropped at once
    ABANDON = 2.0
    #: the same for the untimed first step at a new count (it may include one-off warm-up)
    ABANDON_FIRST = 4.0
    #: a step at a count whose team waits for descheduled threads can take this many times longer
    #: (issue 10: 20-30x); a count above the current one is only probed when the budget covers that
    WORST = 25.0
    #: probing may cost at most this share of the time since training started
    BUDGET = 0.03
    #: within a long epoch, re-check after this many seconds
    RECHECK_S = 5.0
    #: between calibrations: re-check at once when the median of the last WATCH steps is this much slower
    #: than the chosen count measured (load arrived, or the calibration was misled by noise)
    SLOWDOWN = 1.5
    WATCH = 8
    #: a smaller count within this fraction of the fastest is preferred: it leaves cores to the desktop,
    #: cannot stall when load arrives, and six probe steps cannot tell counts closer than this apart
    #: (the MNIST MLP at batch 64 measured 1 and 2 threads within ~3 % of each other, either way round)
    PREFER_FEWER = 0.05
    #: after the first round, a calibration stops when the counts are this far apart and the steps long
    #: enough (CLEAR_MIN_S) for a step's time to be read reliably: a second round would only cost more
    #: steps at the slower count (LeNet at batch 512 on an idle 2-core machine: one thread 1.6x slower,
    #: 20 steps in a two-epoch run, of which the second round took 4 at one thread)
    CLEAR = 1.25
    CLEAR_MIN_S = 5e-3
    #: a run shorter than this many calibrations' worth of steps trains at the first guess, unmeasured: probing
    #: would be most of it (LeNet at batch 512, one epoch: 10 steps, of which a calibration takes 8)
    SHORT_RUNS = 3

    def __init__(self, requested: int = 0, ceiling: int | None = None, *, adaptive: bool = True,
                 set_threads: Callable[[int], None] | None = None, get_threads: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.perf_counter, initial: int | None = None) -> None:
        if set_threads is None or get_threads is None:
            import torch

            set_threads = set_threads or torch.set_num_threads
            get_threads = get_threads or torch.get_num_threads
        self._set, self._clock = set_threads, clock
        self.before = int(get_threads())
        self.ceiling = max(1, int(ceiling or self.before))
        self.fixed = requested > 0
        self.adaptive = adaptive and not self.fixed and self.ceiling > 1
        self._load: LoadSample | None = None
        self._guess: int | None = None
        if self.fixed:
            self.threads = int(requested)
        elif self.adaptive:
            # the first guess (cores other programs leave free) decides what the first calibration
            # may try; until then one thread, which cannot stall (the first step initialises
            # optimizer state: ~free). Measured from now until it is needed (the second step).
            self._guess = initial
            if initial is None:
                recent = recent_window()
                if recent is not None:
                    self._load = recent
                    self._guess = self.guess  # read now: no wait, and a short run starts at it
                else:
                    self._load = LoadSample()
            self.threads = 1
        else:
            self.threads = self.ceiling
        if not self.adaptive:
            self._guess = self.threads
        self._short = False  # a run too short to calibrate (expect_steps): the first guess, unmeasured
        self._short_pending = False  # ... taken at the second step, once the load has been measured
        self._applied = -1
        self._apply(self.threads)
        self.calibrations = 0          # finished calibrations
        self.history: list[dict[str, Any]] = []   # one record per calibration: medians and the choice
        self.probe_cost = 0.0          # seconds lost to probing counts slower than the chosen one
        self._t_start = clock()
        self._plan: list[int] = []     # thread count of each remaining probe step
        self._later: list[int] = []    # the calibration's second round, unless the first one settles it
        self._fresh: set[int] = set()  # counts whose next step is untimed (first after a switch)
        self._times: dict[int, list[float]] = {}
        self._probe_total = 0.0
        self._probe_steps = 0
        self._t0: float | None = None
        self._steps = 0
        self._due = self.adaptive      # calibrate as soon as training runs
        self._last_check = clock()
        self._chosen_s: float | None = None  # step time of the chosen count at the last calibration
        self._recent: list[float] = []       # step times since then (the last WATCH)
        self._watch_t0: float | None = None

    # --- the loop's hooks ---------------------------------------------------------
    def expect_steps(self, steps: int) -> bool:
        """The run will take about ``steps`` steps (before the first one). Too few to pay for a calibration:
        train at the first guess (the cores other programs leave free) without probing. True if so."""
        calibration = self.ROUNDS * (self.PROBE_STEPS + 1) * len(candidates(self.ceiling))
        if not self.adaptive or self._steps or steps >= self.SHORT_RUNS * calibration:
            return False
        self.adaptive = False  # nothing to measure: the guess stays in force (mode still "auto")
        self._short = True
        if self._guess is None:
            self._short_pending = True  # the load is still being measured: one thread for the first step
        else:
            self.threads = self._guess
            self._apply(self.threads)
        return True

    @property
    def guess(self) -> int:
        """The first guess: the cores other programs leave free (measured when first asked), at least the
        count the last run in this process chose."""
        if self._guess is None:
            guess = initial_threads(self.ceiling, busy_cores(since=self._load))
            if _last_choice is not None:
                guess = max(guess, min(_last_choice, self.ceiling))
            self._guess = guess
        return self._guess

    @property
    def hooked(self) -> bool:
        """Does the loop need to call :meth:`step_start` / :meth:`step_end`? (adapting, or a short run still
        to take its first guess)"""
        return self.adaptive or self._short_pending

    @property
    def calibrating(self) -> bool:
        return bool(self._plan)

    def epoch_start(self) -> None:
        if self.adaptive and not self._plan:
            self._due = True

    def step_start(self) -> None:
        if self._short_pending:
            self._steps += 1
            load = self._load
            if self._steps >= 2 or load is None or time.perf_counter() - load.t0 >= SAMPLE_S:
                self._short_pending = False
                self.threads = self.guess
                self._apply(self.threads)
            return
        if not self.adaptive:
            return
        self._steps += 1
        if not self._plan:
            if self._steps == 1:
                return  # the very first step initialises optimizer state and caches: never timed
            now = self._clock()
            if not self._due and now - self._last_check >= self.RECHECK_S:
                self._due = True
            if not self._due or not self._within_budget():
                self._watch_t0 = now
                return
            self._begin()
        self._apply(self._plan[0])
        self._t0 = self._clock()

    def step_end(self) -> None:
        if self._t0 is None:
            if self._watch_t0 is not None:
                self._watch(self._clock() - self._watch_t0)
                self._watch_t0 = None
            return
        dt = self._clock() - self._t0
        self._t0 = None
        n = self._plan.pop(0)
        self._probe_total += dt
        self._probe_steps += 1
        if n in self._fresh:
            self._fresh.discard(n)  # wake-up / new kernels at this count: not representative
            self._maybe_abandon(n, dt, self.ABANDON_FIRST)  # ...unless a descheduled team is obvious
        else:
            self._times.setdefault(n, []).append(dt)
            self._maybe_abandon(n, dt, self.ABANDON)
        if not self._plan and self._later:
            self._plan = [c for c in self._later if c in self._times] if not self._settled() else []
            self._later = []
        if self._plan and self._plan[0] != n:
            self._fresh.add(self._plan[0])
        if not self._plan:
            self._decide()

    def close(self) -> None:
        """Give torch back the count it had before (the caller's setting)."""
        global _window
        _window = LoadSample()  # a next run soon after reads the machine from here
        self._t0 = None
        self._plan, self._later = [], []
        if self._applied != self.before:
            self._set(self.before)
            self._applied = self.before

    @property
    def mode(self) -> str:
        """'fixed' (the user's count), 'auto' (adapting, or a short run at the first guess) or 'default' (the
        caller's count, not adapted)."""
        return "fixed" if self.fixed else "auto" if self.adaptive or self._short else "default"

    def summary(self) -> dict[str, Any]:
        return {"threads": self.threads, "threads_mode": self.mode, "thread_calibrations": self.calibrations}

    # --- internals ----------------------------------------------------------------
    def _apply(self, n: int) -> None:
        if n != self._applied:
            self._set(n)
            self._applied = n

    def _within_budget(self) -> bool:
        elapsed = self._clock() - self._t_start
        return self.probe_cost <= self.BUDGET * elapsed

    def _begin(self) -> None:
        # fewer threads first: they never stall, and give the reference the others are judged by
        order = [c for c in candidates(self.ceiling) if c <= self.threads or self._may_try_more(c)]
        self._due = False
        plan: list[int] = []
        later: list[int] = []
        if len(order) == 1:  # only the count in force: time it (free), so later checks know what to beat
            plan = order * self.PROBE_STEPS
        for r in range(self.ROUNDS if len(order) > 1 else 0):
            for c in (order if r % 2 == 0 else list(reversed(order))):
                (plan if r == 0 else later).extend([c] * (self.PROBE_STEPS + 1))
        self._plan, self._later = plan, later
        self._times = {}
        self._fresh = {plan[0]} if plan[0] != self._applied else set()
        self._probe_total, self._probe_steps = 0.0, 0

    def _may_try_more(self, n: int) -> bool:
        """Probe ``n`` threads, more than in force now? At the first calibration when the load
        average said the cores were free; later when the budget covers one stalled step."""
        if self._chosen_s is None:
            return self.calibrations == 0 and n <= self.guess
        elapsed = self._clock() - self._t_start
        return self.probe_cost + self.WORST * self._chosen_s <= self.BUDGET * elapsed

    def _watch(self, dt: float) -> None:
        if self._chosen_s is None:
            return
        recent = self._recent
        recent.append(dt)
        if len(recent) > self.WATCH:
            del recent[0]
        if len(recent) == self.WATCH and statistics.median(recent) > self.SLOWDOWN * self._chosen_s:
            self._due = True  # taken at the next step, if the probing budget allows
            recent.clear()

    def _maybe_abandon(self, n: int, dt: float, factor: float) -> None:
        others = [statistics.median(v) for c, v in self._times.items() if c != n and v]
        if others and dt > factor * min(others):
            self._plan = [c for c in self._plan if c != n]
            self._times.pop(n, None)  # one step is enough to rule it out this time
            self._fresh.discard(n)

    def _settled(self) -> bool:
        """After the first round: is one count clearly the fastest, with steps long enough to tell?"""
        medians = sorted(statistics.median(v) for v in self._times.values() if v)
        return len(medians) >= 2 and medians[0] >= self.CLEAR_MIN_S and medians[1] >= self.CLEAR * medians[0]

    def _decide(self) -> None:
        medians = {c: statistics.median(v) for c, v in self._times.items() if v}
        self._last_check = self._clock()
        if not medians:
            return
        best = min(medians.values())
        choice = min(c for c, m in medians.items() if m <= best * (1 + self.PREFER_FEWER))
        self.probe_cost += max(0.0, self._probe_total - self._probe_steps * medians[choice])
        global _last_choice
        self.threads = _last_choice = choice
        self._apply(choice)
        self._chosen_s = medians[choice]
        self._recent = []
        self.calibrations += 1
        self.history.append({"medians_s": dict(sorted(medians.items())), "threads": choice})
