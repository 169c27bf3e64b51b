"""The executors' job board in the state store, on SQLite and PostgreSQL.

What is checked: state merged step by step, the latest and finished frames as bytes, polls (seen),
stop requests whose first reason stays, the running jobs found for the supervisor, forget and sweep;
that two board objects on one database (two replicas) see each other's writes; and that a board
on PostgreSQL writes no file anywhere.
"""

import os
import time
from pathlib import Path

import pytest

from disco_service.server.jobs import JobBoard, check_job_id
from disco_service.server.store import SCHEMA_VERSION, open_store
from disco_service.wire import JobStatus

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # bytes of every value, as a frame's would be


@pytest.fixture
def boards(target):
    """Opens boards on the same database, as two executor replicas would (each its own connection)."""
    opened = []

    def open_one() -> JobBoard:
        opened.append(JobBoard(target))
        return opened[-1]

    yield open_one
    for board in opened:
        board.close()


def test_state_merges_step_by_step_and_frames_come_back_as_bytes(boards):
    sampler, renderer = boards(), boards()  # two replicas: the one asked is not the one making the image
    assert renderer.read("doc1") is None and renderer.latest_frame("doc1") is None
    sampler.update("doc1", status=JobStatus.RUNNING, step=0, replica="host:1")
    sampler.update("doc1", PNG, step=3, total=10)
    state = renderer.read("doc1")
    assert (state["status"], state["step"], state["total"], state["replica"]) == ("running", 3, 10, "host:1")
    assert abs(state["updated"] - time.time()) < 5
    assert renderer.latest_frame("doc1") == PNG
    sampler.update("doc1", PNG[:20], step=4)
    assert renderer.latest_frame("doc1") == PNG[:20] and renderer.read("doc1")["step"] == 4  # replaced in place
    sampler.add_finished_frame("doc1", 0, PNG)
    sampler.add_finished_frame("doc1", 1, PNG[:30])
    assert [renderer.finished_frame("doc1", n) for n in (0, 1, 2)] == [PNG, PNG[:30], None]
    assert renderer.latest_frame("doc1") == PNG[:20]  # finished frames are apart from the latest one


def test_stop_requests_keep_their_first_reason_and_reach_other_replicas(boards):
    sampler, renderer = boards(), boards()
    assert sampler.stop_reason("doc2") is None
    renderer.cancel("doc2")  # before the image started: it stops as soon as it does
    renderer.cancel("doc2", JobStatus.SHUTDOWN)
    assert sampler.stop_reason("doc2") == JobStatus.CANCELLED
    assert sampler.read("doc2") is None  # a stop request alone is no state
    sampler.cancel("doc3", JobStatus.ABANDONED)
    assert renderer.stop_reason("doc3") == JobStatus.ABANDONED


def test_polls_are_seen_and_running_jobs_are_found(boards):
    sampler, renderer = boards(), boards()
    assert sampler.last_seen("doc4") is None
    before = time.time()
    renderer.seen("doc4")
    assert before - 1 <= sampler.last_seen("doc4") <= time.time() + 1
    sampler.update("doc4", status=JobStatus.RUNNING, replica="host:7")
    sampler.update("doc5", status=JobStatus.WAITING)
    sampler.update("doc6", status=JobStatus.RUNNING, replica="host:8")
    sampler.update("doc6", status=JobStatus.DONE)
    assert renderer.running() == {"doc4": renderer.read("doc4")}
    assert renderer.read("doc4")["replica"] == "host:7"


def test_forget_and_sweep_remove_a_job_and_its_frames(boards):
    board = boards()
    board.update("doc7", PNG, status=JobStatus.DONE)
    board.add_finished_frame("doc7", 0, PNG)
    board.forget("doc7", older_than_s=3600)  # touched just now: kept
    assert board.read("doc7") is not None
    board.forget("doc7")
    assert (board.read("doc7"), board.latest_frame("doc7"), board.finished_frame("doc7", 0)) == (None, None, None)
    board.update("doc8", PNG, status=JobStatus.DONE)
    board.seen("doc9")
    board.sweep(older_than_s=3600)
    assert board.read("doc8") is not None and board.last_seen("doc9") is not None
    board.store.clock = lambda: time.time() + 7200  # two hours later
    board.sweep(older_than_s=3600)
    assert (board.read("doc8"), board.latest_frame("doc8"), board.last_seen("doc9")) == (None, None, None)
    assert board.store.board_count() == 0


def test_job_ids_are_checked(boards):
    board = boards()
    for bad in ("", "../x", "a b", "x" * 65, None):
        with pytest.raises(ValueError):
            board.update(bad, status=JobStatus.RUNNING)
    assert check_job_id("Ab-1_") == "Ab-1_"


def test_the_board_is_a_migration_of_the_one_store(target):
    store = open_store(target)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        board = JobBoard(store)  # the same store object the job queue uses
        board.update("doc10", status=JobStatus.WAITING)
        assert board.read("doc10")["status"] == "waiting"
    finally:
        store.close()


def test_a_board_on_postgresql_writes_no_file(postgres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    board = JobBoard(postgres.new_database())
    board.update("doc11", PNG, status=JobStatus.RUNNING, step=1)
    board.add_finished_frame("doc11", 0, PNG)
    board.seen("doc11")
    board.cancel("doc11")
    assert board.latest_frame("doc11") == PNG and board.stop_reason("doc11") == JobStatus.CANCELLED
    board.close()
    assert list(Path(tmp_path).iterdir()) == [] and os.listdir(".") == []


def test_serve_py_hands_its_server_s_store_to_every_executor(tmp_path, monkeypatch):
    import serve

    monkeypatch.delenv("DISCO_DATABASE_URL", raising=False)
    monkeypatch.setenv("DISCO_STATE_DIR", str(tmp_path))
    assert serve.board_store(52000) == str(tmp_path / "52000" / "jobs.sqlite3")  # the gateway's queue's file
    assert serve.board_store(None) == str(tmp_path / "51000" / "jobs.sqlite3")  # flow.yml's port
    assert serve.board_store(52000, "/elsewhere.sqlite3") == "/elsewhere.sqlite3"
    flow = serve.flow_config(replicas=1, state_store=serve.board_store(52000))
    assert {e["name"]: e["uses_with"]["state_store"] for e in flow["executors"]} == dict.fromkeys(
        ("encoder", "sampler", "renderer"), str(tmp_path / "52000" / "jobs.sqlite3")
    )
    monkeypatch.setenv("DISCO_DATABASE_URL", "postgresql://disco:secret@db:5432/disco")
    assert serve.board_store(52000) is None  # read from the environment by each process, never a flag
    assert all("state_store" not in e.get("uses_with", {}) for e in serve.flow_config(replicas=1)["executors"])
