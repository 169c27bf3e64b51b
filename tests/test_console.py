"""A first run as a newcomer sees it: the console, the CPU estimate, ``--help``, the progress display."""

import re
import subprocess
import sys
from pathlib import Path

from console import OUR_LINE

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SMALL_RUN = ["--width_height", "64", "64", "--steps", "3", "--skip_steps", "0", "--display_rate", "1",
             "--cut_overview", "[1]*1000", "--cut_innercut", "[1]*1000", "--cutn_batches", "1",
             "--n_batches", "2", "--seed", "5"]  # fmt: skip


def console_lines(stderr: str) -> list[str]:
    """What a terminal shows, line by line: tqdm redraws a bar with \\r and moves with escape codes."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", stderr)) if line.strip()]


def test_an_in_process_run_prints_only_our_lines(flow_env, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--text_prompts", "a lighthouse", *SMALL_RUN]
        + ["--output_dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = console_lines(done.stderr)
    assert [line for line in lines if not OUR_LINE.match(line)] == []
    assert any(line.startswith("image 1 (seed 6):") and "3/3" in line for line in lines)
    assert any(line.startswith("disco: running on the CPU") for line in lines)  # the estimate, before the run
    assert (tmp_path / "out" / "reverse_diffusion-5_1.png").exists()
