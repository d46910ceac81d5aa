"""Fault injection into the batch scorer's finishing steps (`Output.finish`).

A real `python -m server.score` process scores every chunk, then dies (os._exit: no
cleanup, no `finally`) just before the k-th filesystem change of finishing, for
k = 1, 2, ... until it completes untouched. After every kill the output is either absent
(the parts are all kept and `--resume` assembles them) or complete and equal to the
uninterrupted run's; a plain rerun refuses with a message naming --resume; and `--resume`
ends with the uninterrupted run's output and nothing left beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from server.score.cli import main as score
from tests.conftest import ROOT
from tests.faults import INJECTOR, KILLED

# The scorer itself, armed when it starts finishing (every chunk is scored by then).
SCORE = """
from server.score import output as _output
from server.score.cli import main

_finish = _output.Output.finish

def _finish_armed(self, *args, **kwargs):
    arm()
    return _finish(self, *args, **kwargs)

_output.Output.finish = _finish_armed
sys.exit(main(sys.argv[2:]))
"""


def kill_scorer_at(k: int, args: list[str]) -> int:
    """Run the scorer in a fresh process that dies before finishing's k-th change."""
    result = subprocess.run(
        [sys.executable, "-c", INJECTOR + SCORE, str(k), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode in (0, KILLED), result.stderr
    return result.returncode


def test_a_kill_at_every_step_of_finishing_leaves_a_valid_or_resumable_output(
    digits_repo: Path,
    digit_images: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "digits.npy"
    np.save(data, digit_images[0][:40])
    # Three chunks: three parts to merge and remove.
    args = ["--repository", str(digits_repo), "--input", str(data), "--chunk-rows", "16"]
    args += ["--batch-size", "8", "--quiet"]
    assert score([*args, "--output", str(tmp_path / "reference.parquet")]) == 0
    expected = pq.read_table(tmp_path / "reference.parquet")
    assert expected.num_rows == 40

    seen = set()  # per kill: (output in place, parts folder there, marker there)
    checked_settings = False
    k = 0
    while True:
        k += 1
        assert k < 50, "finishing never completed"
        work = tmp_path / f"kill-{k}"
        work.mkdir()
        out = work / "scored.parquet"
        partial, marker = work / "scored.parquet.partial", work / "scored.parquet.finished"
        run = [*args, "--output", str(out)]
        if kill_scorer_at(k, run) == 0:
            break  # finishing made fewer than k changes: every step has been covered
        state = (out.exists(), partial.exists(), marker.exists())
        seen.add(state)

        if out.exists():  # complete and valid, never a half-written output
            assert pq.read_table(out).equals(expected)
            assert marker.exists()  # which vouches for it until the cleanup is done
        else:  # absent, with every part kept for --resume
            assert len(list(partial.glob("part-*.parquet"))) == 3

        # A plain rerun refuses, says what to do, and changes nothing.
        before = sorted(p.name for p in work.iterdir())
        capsys.readouterr()
        assert score(run) == 2
        assert "pass --resume" in capsys.readouterr().err
        assert sorted(p.name for p in work.iterdir()) == before

        if state == (True, True, True) and not checked_settings:
            checked_settings = True
            # Other settings are refused even when only the cleanup is left.
            assert score([*run, "--resume", "--members"]) == 2
            assert "was made with other settings" in capsys.readouterr().err
            assert sorted(p.name for p in work.iterdir()) == before

        assert score([*run, "--resume"]) == 0
        assert pq.read_table(out).equals(expected)
        assert sorted(p.name for p in work.iterdir()) == ["scored.parquet"]

    kills = k - 1
    # At least: the merged file, the marker and its rename, the output's rename, three
    # parts and meta.json, the parts folder, the marker.
    assert kills >= 10, kills
    assert {
        (False, True, False),  # parts kept, nothing assembled yet
        (False, True, True),  # marker written, output not yet in place
        (True, True, True),  # output in place, cleanup not started or half done
        (True, False, True),  # parts folder gone, the marker not yet
    } <= seen, seen
    assert pq.read_table(out).equals(expected)
    assert sorted(p.name for p in work.iterdir()) == ["scored.parquet"]
