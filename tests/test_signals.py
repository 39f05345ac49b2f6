"""`netstudio train` and signals: the ranks of a distributed job die with their launcher, and every
signal ends the job with one line on stderr and the conventional exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_distributed import _worker_pid, job_env, mlp_project, netstudio_cmd

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_job(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A 2-rank CPU job that trains long enough; returns once both ranks train (a checkpoint exists).

    Its output goes to files (out.txt, err.txt): ranks that outlive the launcher keep a pipe open."""
    proj = mlp_project(tmp_path / "digits.nsproj", "digits", 10, epochs=400, batch_size=32)
    ckpt = tmp_path / "ck" / "last.pt"
    job = subprocess.Popen(netstudio_cmd("train", str(proj), "--nproc", "2", "--timeout", "20",
                                         "--checkpoint-dir", str(ckpt.parent)),
                           cwd=tmp_path, env=job_env(), stdout=(tmp_path / "out.txt").open("w"),
                           stderr=(tmp_path / "err.txt").open("w"))
    deadline = time.monotonic() + 150
    while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = [_worker_pid(job.pid, r) for r in (0, 1)]
    if not ckpt.exists() or None in ranks:
        _stop(job, [r for r in ranks if r is not None])
        pytest.fail(f"the job did not start training: {(tmp_path / 'err.txt').read_text()[-2000:]}")
    return job, [int(r) for r in ranks if r is not None]


def _stop(job: subprocess.Popen, ranks: list[int]) -> None:
    if job.poll() is None:
        job.kill()
        job.wait()
    for pid in ranks:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # subprocess, end to end
def test_ranks_die_with_a_killed_launcher(tmp_path: Path) -> None:
    job, ranks = _start_job(tmp_path)
    try:
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in ranks if _alive(p)]
    finally:
        _stop(job, ranks)
    assert survivors == [], "ranks kept training after their launcher was killed"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.slow  # subprocess, end to end
def test_a_signal_ends_the_job_with_one_line_and_its_exit_code(tmp_path: Path, sig: signal.Signals,
                                                               code: int) -> None:
    job, ranks = _start_job(tmp_path)
    try:
        os.kill(job.pid, sig)
        job.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in ranks if _alive(p)]
    finally:
        _stop(job, ranks)
    err = (tmp_path / "err.txt").read_text()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"interrupted by {sig.name}"), err
    assert f"--resume to continue from the last checkpoint in {tmp_path / 'ck'}" in lines[0]
    assert job.returncode == code
    assert survivors == []


@pytest.mark.slow  # subprocess, end to end
def test_one_process_stops_on_sigterm_like_ctrl_c(tmp_path: Path) -> None:
    """Without --nproc: the current batch ends, the model is still exported, one line on stderr (SIGHUP
    takes the same path)."""
    sig, code = signal.SIGTERM, 143
    proj = mlp_project(tmp_path / "digits.nsproj", "digits", 10, epochs=400, batch_size=32)
    out_pt = tmp_path / "partial.pt"
    proc = subprocess.Popen(netstudio_cmd("train", str(proj), "--out", str(out_pt)), cwd=tmp_path, env=job_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch 1/400"):
                break
        else:
            pytest.fail("training never reported an epoch: " + "".join(seen))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"stopping after the current batch ({sig.name})…"]
    assert any(line.startswith("stopped (") for line in out.splitlines()) and out_pt.exists()



def test_sigterm_outside_training_ends_a_command_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """check/export, or train before its loop: SIGTERM and SIGHUP end the command like Ctrl-C."""
    from netstudio import cli

    before = signal.getsignal(signal.SIGTERM)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        def command() -> int:
            os.kill(os.getpid(), sig)  # arrives while the command runs
            time.sleep(5)  # interrupted by the signal's handler
            return 0

        capsys.readouterr()
        t0 = time.monotonic()
        assert cli._run(lambda: cli._with_stop_signals(command)) == code
        assert time.monotonic() - t0 < 4
        assert capsys.readouterr().err == f"interrupted by {sig.name}\n"
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored after the command
