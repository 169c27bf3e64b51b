"""Start-up survives the store's own files: a job file, a result record or a job board file of any
content (empty, ``null``, cut short, zeros, a list, fields of another kind) is skipped with a line
in the log naming it, and the files around it are read as before."""

import asyncio
import dataclasses
import json
import logging

from fake_flow import FakeFlow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_job_queue import settings as small_settings

from disco_service.server import http_api
from disco_service.server.job_queue import JobQueue
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore

QUICK = dict(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# what a file may hold: any bytes, any JSON value, or the usual wreckage
CONTENT = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"null", b"\0" * 32, b"[]", b'{"id": "x", "images": [', b"{}", b"42", b'"text"']),
)


def skipped_with_a_log_line(caplog, name: str) -> bool:
    return any(name in record.getMessage() and "skipped" in record.getMessage() for record in caplog.records)


@given(content=CONTENT)
@settings(**QUICK)
def test_a_job_file_of_any_content_is_skipped_with_a_log_line_naming_it(tmp_path_factory, caplog, content):
    store = ResultStore(tmp_path_factory.mktemp("store") / "results")
    good = JobQueue(store, FakeFlow(store)).submit("alice", small_settings())
    (store.dir / "jobs" / "broken.json").write_bytes(content)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="disco.service"):
        queue = JobQueue(store, FakeFlow(store))  # as the gateway starts
    assert list(queue.jobs) == [good.id]
    assert skipped_with_a_log_line(caplog, "broken.json")


@given(field=st.sampled_from(["id", "owner", "created", "settings", "images", "changed", "has_video", "extra"]),
       image_field=st.sampled_from(["index", "seed", "doc_id", "status", "step", "error", "started", "frames"]),
       value=JSON, in_image=st.booleans())  # fmt: skip
@settings(**QUICK)
def test_a_job_record_with_any_field_of_another_kind_is_skipped_or_served(
    tmp_path_factory, field, image_field, value, in_image
):
    made = ResultStore(tmp_path_factory.mktemp("made") / "results")
    job = JobQueue(made, FakeFlow(made)).submit("alice", small_settings(n=2))
    record = json.loads(json.dumps(dataclasses.asdict(job)))  # the job file an earlier version kept
    store = ResultStore(tmp_path_factory.mktemp("store") / "results")
    path = store.dir / "jobs" / f"{job.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if in_image:
        record["images"][0][image_field] = value
    else:
        record[field] = value
    path.write_text(json.dumps(record))
    queue = JobQueue(store, FakeFlow(store))
    for loaded in queue.jobs.values():  # a job read back is served: its view, its place, its start-up
        http_api.job_view(queue, loaded)
        queue.position(loaded)

    async def start_up():
        task = asyncio.create_task(queue.run())
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(start_up())


@given(content=CONTENT)
@settings(**QUICK)
def test_a_result_record_of_any_content_is_no_record_with_a_log_line(tmp_path_factory, caplog, content):
    store = ResultStore(tmp_path_factory.mktemp("store") / "results")
    store.entry("img1").mkdir(parents=True)
    (store.entry("img1") / "result.json").write_bytes(content)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="disco.service"):
        record = store.read("img1")
    if record is None:
        assert skipped_with_a_log_line(caplog, "result.json")
    else:  # a real record: what its readers need
        assert isinstance(record, dict) and isinstance(record["status"], str)
    store.file("img1", "frames.gif")
    store.sweep()


@given(content=CONTENT, cancel=st.binary(max_size=16))
@settings(**QUICK)
def test_a_job_board_state_of_any_content_is_skipped_with_a_log_line(tmp_path_factory, caplog, content, cancel):
    board = JobBoard(tmp_path_factory.mktemp("board") / "jobs.sqlite3")
    board.update("good", status="running", step=1)
    board.update("broken", status="running", step=1)
    with board.store._tx() as tx:  # as an older version or a damaged write could have left it
        text, reason = content.decode("utf-8", "replace"), cancel.decode("utf-8", "replace")
        tx.run("UPDATE board SET state = ?, stop_reason = ? WHERE doc_id = ?", (text, reason, "broken"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="disco.service"):
        running = board.running()  # as the supervisor reads it at a restart
        state = board.read("broken")
    assert "good" in running
    assert state is None or isinstance(state, dict)
    if state is None and text:  # an empty state is no state: nothing to tell
        assert skipped_with_a_log_line(caplog, "broken")
    board.stop_reason("broken")
    board.update("broken", status="failed")  # written over with a real state
    assert board.read("broken")["status"] == "failed"
