"""The fast lane's rules (tests/lane.py) and the skips that say how to get a missing program (tests/needs.py)."""

import subprocess
import sys
import time

import lane
import needs
import pytest


@pytest.mark.parametrize(
    "argv,name",
    [
        ([sys.executable, "/repo/serve.py", "--port=1"], "serve.py"),
        ([sys.executable, "-u", "serve.py"], "serve.py"),
        (["/venv/bin/jina", "flow", "--uses", "flow.yml"], "jina"),
        (["python3", "/venv/bin/jina", "gateway"], "jina"),
        (["/usr/bin/chromium", "--headless"], "chromium"),
        (["nginx: master process /usr/sbin/nginx -c /tmp/x/nginx.conf"], "nginx"),
        (["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "k.json"], "ipykernel_launcher"),
        ([sys.executable, "/venv/bin/jina", "export", "docker-compose", "flow.yml", "out.yml"], None),
        (["/venv/bin/jina", "ping", "gateway", "grpc://127.0.0.1:1"], None),
        ([sys.executable, "client.py", "--help"], None),
        ([sys.executable, "-c", "import jina"], None),
        (["bash", "-n", "serve.py"], None),  # bash only reads it
        (["curl", "http://127.0.0.1/jina"], None),
        ([], None),
    ],
)
def test_the_programs_of_the_slow_lane_are_known_by_their_command(argv, name):
    assert lane.forbidden(argv) == name


def test_a_fast_test_may_not_start_a_program_of_the_slow_lane(process_guard, tmp_path):
    assert process_guard is not None  # this test is in the fast lane, so it is guarded
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(lane.ForbiddenProcess, match="mark it @pytest.mark.slow"):
        subprocess.Popen([str(fake), "-c", "nginx.conf"])
    with pytest.raises(lane.ForbiddenProcess):
        subprocess.run(f"{fake} -c nginx.conf", shell=True)
    assert len(process_guard.refused) == 2  # even when the test swallows the error, it fails afterwards
    assert subprocess.run([sys.executable, "-c", "print('fine')"], capture_output=True).returncode == 0
    process_guard.forgive()


def test_a_program_of_the_slow_lane_started_by_a_child_is_seen(process_guard):
    # bash may start (it is no Flow), but the process it becomes runs "serve.py": as client.py's own Flow would
    child = subprocess.Popen(["bash", "-c", "exec -a serve.py sleep 30"])
    try:
        deadline = time.time() + 10
        while not process_guard.watch.found:
            assert time.time() < deadline, "the watch did not see the child"
            time.sleep(0.05)
        pid, command = process_guard.watch.found[0]
        assert pid == child.pid and command[0] == "serve.py"
    finally:
        child.kill()
        child.wait()
    process_guard.forgive()


def test_processes_older_than_the_watch_are_left_alone(process_guard):
    before = subprocess.Popen(["bash", "-c", "exec -a serve.py sleep 30"])  # e.g. a session's served Flow
    try:
        time.sleep(0.2)  # until it runs as serve.py
        watch = lane.ProcessWatch(period_s=0.01).start()
        time.sleep(0.1)
        watch.stop()
        assert watch.found == []
    finally:
        before.kill()
        before.wait()
    process_guard.forgive()  # this test's own guard saw it start


class Item:
    """What the marking hook reads of a collected test."""

    def __init__(self, *fixturenames: str):
        self.fixturenames = fixturenames
        self.nodeid = f"tests/test_{fixturenames[-1]}.py::test_it"
        self.marks: list[pytest.Mark] = []

    def add_marker(self, mark: pytest.MarkDecorator) -> None:
        self.marks.append(mark.mark)


def test_tests_asking_for_a_program_or_a_real_size_model_are_slow_and_those_of_one_program_share_a_worker():
    from conftest import pytest_collection_modifyitems

    items = [Item("tmp_path"), Item("served_flow"), Item("tmp_path", "token_flow"), Item("tmp_path", "page")]
    items += [Item("flow_env"), Item("tiny_models", "model_dir"), Item("rn50_models"), Item("postgres")]
    pytest_collection_modifyitems(items)
    slow = [any(m.name == "slow" for m in item.marks) for item in items]
    assert slow == [False, True, True, True, True, True, True, False]
    from workers import worker_group

    assert [worker_group(item) for item in items] == [
        "tests/test_tmp_path.py",  # by file: its module fixtures are built once
        "served",  # each served Flow's tests on one worker
        "token_flow",
        "tests/test_page.py",
        "tests/test_flow_env.py",
        "tests/test_model_dir.py",
        "tests/test_rn50_models.py",
        "postgres",  # one PostgreSQL cluster per run
    ]


@pytest.mark.parametrize(
    "need,what,command",
    [
        (needs.need_chromium, "chromium", "apt-get install chromium"),
        (needs.need_nginx, "nginx", "apt-get install nginx-light"),
        (needs.need_postgres, "postgres", "apt-get install postgresql"),
    ],
)
def test_a_missing_program_skips_with_the_command_that_installs_it(monkeypatch, need, what, command):
    monkeypatch.setattr(needs.shutil, "which", lambda name: None)
    monkeypatch.setattr(needs.os.path, "isfile", lambda path: False)
    monkeypatch.setattr(needs.glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.skip.Exception, match=command):
        need()
    assert command in needs.HOW_TO_GET[what]


def test_the_controller_shares_out_the_groups_the_workers_wrote(tmp_path, monkeypatch):
    import types

    from workers import GROUPS_DIR, GroupScheduling, write_groups

    monkeypatch.setenv(GROUPS_DIR, str(tmp_path))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    flow, alone = Item("served_http"), Item("tmp_path")
    write_groups([flow, alone])
    scheduler = types.SimpleNamespace()
    split = GroupScheduling._split_scope.__get__(scheduler)
    assert split(flow.nodeid) == "served" and split(alone.nodeid) == "tests/test_tmp_path.py"
    assert split("tests/test_new.py::test_unknown[1]") == "tests/test_new.py"  # not written: its file
