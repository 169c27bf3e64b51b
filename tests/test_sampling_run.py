"""A job's life on a sampler (disco_service/server/sampling_run.py): steps in, one record out,
shaped alike for an image and an animation, on the job board, in the result store and in the tags."""

import numpy as np
import pytest
from conftest import TINY

from disco.animation_plan import plan_run
from disco.clip_model import encode_texts
from disco.settings import validate_settings
from disco_service import wire
from disco_service.client.api import make_documents
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore
from disco_service.server.sampling_run import SamplingRun
from executors.diffusion_sampler import DiffusionSampler

IMAGE = plan_run(validate_settings(**TINY, tokens=False))  # 4 steps, 1 skipped: 3 sampled
ANIMATED = {**TINY, "animation_mode": "2D", "max_frames": 3, "frames_skip_steps": "50%"}
ANIMATION = plan_run(validate_settings(ANIMATED, tokens=False))  # 3 steps, then 2 a frame


def board_and_store(tmp_path):
    return JobBoard(tmp_path / "jobs"), ResultStore(tmp_path / "results")


def test_a_finished_image_leaves_its_record_on_the_board_in_the_store_and_in_the_tags(tmp_path):
    board, store = board_and_store(tmp_path)
    run = SamplingRun("job1", IMAGE, board, "host:1", timeout_s=600)
    seen = []

    def steps():
        for step in (1, 2, 3):
            seen.append(board.read("job1")["status"])
            yield step

    run.drive(steps())
    assert seen == ["running"] * 3
    tags = run.end(store, run.record(7, {"steps": 4}, [{"step": 3, "cur_t": 0}]))
    assert tags["status"] == "done" and (tags["steps_done"], tags["total"]) == (3, 3) and "error" not in tags
    assert tags["replica"] == "host:1" and tags["started"] <= tags["finished"]
    record = store.read("job1")
    assert (record["status"], record["seed"], record["steps_done"], record["total"]) == ("done", 7, 3, 3)
    assert "animation" not in record and record["settings"] == {"steps": 4}
    state = board.read("job1")
    assert state["status"] == "done" and "run_total" not in state and state["total"] == 3


def test_an_animation_counts_its_steps_over_the_whole_run(tmp_path):
    board, store = board_and_store(tmp_path)
    run = SamplingRun("job2", ANIMATION, board, "host:1", timeout_s=600)
    first = {}

    def steps():
        first.update(board.read("job2"))
        yield from range(1, ANIMATION.run_steps + 1)

    run.drive(steps())
    assert (first["frame"], first["frames"], first["total"], first["run_total"]) == (0, 3, 3, 3 + 2 + 2)
    tags = run.end(store, run.record(7, {}, []))
    assert (tags["steps_done"], tags["total"]) == (7, 7)
    assert store.read("job2")["animation"]["frames"] == 3 and store.read("job2")["animation"]["start_frame"] == 0


def test_a_stop_a_silent_caller_and_a_fault_end_the_job_at_their_step(tmp_path):
    board, store = board_and_store(tmp_path)
    cancelled = SamplingRun("job3", IMAGE, board, "host:1", timeout_s=600)

    def cancel_at_2():
        yield 1
        board.cancel("job3")
        yield 2
        pytest.fail("a cancelled job went on")

    cancelled.drive(cancel_at_2())
    assert (cancelled.status, cancelled.step) == ("cancelled", 2)

    silent = SamplingRun("job4", IMAGE, board, "host:1", timeout_s=0)  # nobody polls: gone at once
    silent.drive(iter([1, 2, 3]))
    assert (silent.status, silent.step) == ("abandoned", 1)

    def nan_at_2():
        yield 1
        raise RuntimeError("the image became NaN at step 2")

    failed = SamplingRun("job5", IMAGE, board, "host:1", timeout_s=600)
    failed.drive(nan_at_2())
    tags = failed.end(store, failed.record(1, {}, []))
    assert (tags["status"], tags["steps_done"]) == ("failed", 1)
    assert tags["error"] == "RuntimeError: the image became NaN at step 2" == store.read("job5")["error"]


def test_the_sampler_runs_a_still_image_through_it(tiny_models, tmp_path):
    s = validate_settings(**TINY, text_prompts=["a lighthouse"], seed=3, n_batches=1, output_dir=str(tmp_path))
    (doc,) = make_documents(s, None)
    doc.tags.update(wire.restore_numbers(doc.tags))
    doc.embedding = encode_texts(tiny_models.clip, ["a lighthouse"]).numpy()
    doc.tags[wire.PROMPT_WEIGHTS_TAG] = [1.0]

    class FixedCache:
        def models(self, *args):
            return tiny_models

    executor = DiffusionSampler.__new__(DiffusionSampler)
    executor.cache, (executor.board, executor.store) = FixedCache(), board_and_store(tmp_path)
    executor.replica, executor.client_timeout_s = "test", 600.0
    executor._generate(doc)
    assert doc.tags["status"] == "done" and (doc.tags["steps_done"], doc.tags["total"]) == (3, 3)
    shown = [c.tags["step"] for c in doc.chunks]  # display_rate 2: the frames of steps 1 and 3
    assert shown == [1, 3] and all(np.isfinite(c.tensor).all() for c in doc.chunks)
    record = executor.store.read(doc.id)
    assert record["status"] == "done" and [f["step"] for f in record["frames"]] == shown
