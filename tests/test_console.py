"""A first run as a newcomer sees it: the console, the CPU estimate, ``--help``, the progress display."""

import re
import subprocess
import sys
from pathlib import Path

from boards import board_states

from disco_service.console import OUR_LINE

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SMALL_RUN = ["--width_height", "64", "64", "--steps", "3", "--skip_steps", "0", "--display_rate", "1",
             "--cut_overview", "[1]*1000", "--cut_innercut", "[1]*1000", "--cutn_batches", "1",
             "--n_batches", "2", "--seed", "5"]  # fmt: skip


def console_lines(stderr: str) -> list[str]:
    """What a terminal shows, line by line: tqdm redraws a bar with \\r and moves with escape codes."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", stderr)) if line.strip()]


def test_an_in_process_run_prints_only_our_lines_and_leaves_no_job_files(flow_env, tmp_path):
    before = set(board_states(flow_env["DISCO_STATE_DIR"]))
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
    assert set(board_states(flow_env["DISCO_STATE_DIR"])) - before == set()  # collected jobs leave the board


def help_entries(text: str) -> dict[str, str]:
    """``--help``'s options: each option's name and its whole help text on one line."""
    entries: dict[str, str] = {}
    options = text[text.index("options:") :].split("\n\n")[0]
    for block in re.split(r"\n(?=  -)", options)[1:]:
        name = block.split()[0].rstrip(",")
        entries[name] = " ".join(block.split())
    return entries


def test_help_gives_each_setting_its_meaning_allowed_values_and_one_default():
    from disco.settings import SETTING_NAMES, describe

    done = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    entries = help_entries(done.stdout)
    for name in SETTING_NAMES:
        meaning, allowed, default = describe(name)
        entry = entries[f"--{name}"]
        assert meaning and meaning in entry, name
        assert allowed and allowed in entry, name
        assert entry.count("(default: ") == 1 and entry.endswith(f"(default: {default})"), entry
    assert all(entry.count("default:") <= 1 for entry in entries.values()), entries
    assert "Disco Diffusion setting" not in done.stdout


def test_help_names_each_clip_model_once(monkeypatch):
    from disco.clip_catalog import CLIP_MODELS
    from disco_service.client import cli

    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no name broken at a hyphen
    text = cli.build_parser().format_help()
    entry = text[text.index("\n  --clip_models") :]
    entry = entry[: entry.index("\n  --", 1)]  # up to the next option
    for name in CLIP_MODELS:
        assert entry.count(f"{name} (") == 1, name


def test_the_cpu_estimate_matches_the_benchmark_and_says_how_to_make_it_small():
    from disco.settings import validate_settings
    from disco_service.client.cpu_estimate import SMALL_RUN, cpu_notice, cpu_seconds_per_step

    # benchmarks/results: fast mode, 2 cores, one batch of 16 cutouts
    assert abs(cpu_seconds_per_step(256, 256, cutn_batches=1) - 11.21) < 0.01
    assert abs(cpu_seconds_per_step(512, 512, cutn_batches=1) - 29.23) < 0.01
    default = cpu_seconds_per_step(1280, 768)  # 4 cutout batches
    assert 90 < default < 130
    notice = cpu_notice(validate_settings(), "no CUDA GPU found")
    assert "4 images of 1280x768, 240 steps each" in notice and "about 2 min a step, 28 h in all" in notice
    assert notice.endswith(SMALL_RUN)
    small = validate_settings(width_height=[256, 256], steps=50, skip_steps=0, cutn_batches=1, n_batches=1)
    small_notice = cpu_notice(small, "use_gpu is off")
    assert "about 11 s a step, 9 min in all" in small_notice and SMALL_RUN not in small_notice


def test_progress_says_waiting_then_shows_the_rate_only_after_two_steps():
    import io

    from docarray import Document

    from disco_service.client.progress import ProgressBars

    docs = [Document(id=f"j{i}", tags={"steps": 10, "skip_steps": 0, "seed": 5 + i}) for i in range(3)]
    bars = ProgressBars(docs, file=io.StringIO())

    def show(*states):
        bars.update([Document(id=f"j{i}", tags=tags) for i, tags in states])
        return [str(bars.bars[f"j{i}"]) for i in range(3)]

    waiting = {"status": "waiting"}
    assert show((0, waiting), (1, waiting), (2, waiting)) == [
        "image 0 (seed 5): waiting for a sampler",
        "image 1 (seed 6): waiting for a sampler, 1 of this run's images ahead",
        "image 2 (seed 7): waiting for a sampler, 2 of this run's images ahead",
    ]
    first, second, third = show((0, {"status": "running", "step": 1, "loss": 1.5}), (1, waiting), (2, waiting))
    assert first.startswith("image 0 (seed 5):  10%") and "1/10" in first
    assert "step/s" not in first and "s/step" not in first and "<" not in first  # no rate, no time left yet
    assert second.endswith("1 of this run's images ahead")
    first = show((0, {"status": "running", "step": 2}), (1, {"status": "running", "step": 0}), (2, waiting))[0]
    assert "2/10" in first and ("step/s" in first or "s/step" in first)
    bars.close()


def test_a_batch_s_bar_says_it_is_a_batch_and_how_many_images_it_paints():
    import io

    from docarray import Document

    from disco_service.client.progress import ProgressBars

    tags = {"steps": 10, "skip_steps": 0, "batch_size": 3.0}
    bars = ProgressBars([Document(id=f"j{i}", tags={**tags, "seed": 5 + i}) for i in range(2)], file=io.StringIO())
    running, waiting = {"status": "running", "step": 1}, {"status": "waiting"}
    bars.update([Document(id="j0", tags=running), Document(id="j1", tags=waiting)])
    first, second = (str(bars.bars[f"j{i}"]) for i in range(2))
    assert first.startswith("batch 0, 3 images (seed 5):  10%") and "1/10" in first
    assert second == "batch 1, 3 images (seed 6): waiting for a sampler, 1 of this run's images ahead"
