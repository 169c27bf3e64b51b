"""The state store on both backends: SQLite (a file) and PostgreSQL (a throwaway cluster).

What is checked: migrations (from empty, again on re-open, refusal of a newer schema), jobs and
images in and out, the fair order between owners, claims that never exceed the slots, two
claimers racing from two threads, a claimer that stops renewing losing its images to another,
a Document id never sent twice, progress, cancel, the time to live, tokens kept as hashes; and
that the default store belongs to one user and one server.
"""

import stat
import tempfile
import threading
from pathlib import Path

import pytest

from disco_service import config
from disco_service.server.store import (
    SCHEMA_VERSION,
    AlreadySent,
    StoreError,
    TooManyUnfinished,
    open_store,
    token_hash,
)

LEASE_S = 30.0


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def stores(target, clock):
    """Opens stores on the same database (as separate gateways would: each its own connection)."""
    opened = []

    def open_one(moved_by_hand: bool = True):
        store = open_store(target, clock) if moved_by_hand else open_store(target)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(stores):
    return stores()


def submit(store, clock, job_id: str, owner: str, n: int = 1, **kwargs):
    """A job of ``n`` images; the clock moves a second first, so submissions have distinct times."""
    clock.advance(1)
    return store.submit(
        job_id, owner, {"text_prompts": ["a lighthouse"], "seed": 7}, [7 + i for i in range(n)], **kwargs
    )


def claim_all(store, claimer: str = "gateway-a", slots: int = 100):
    claimed = []
    while image := store.claim_next(claimer, LEASE_S, slots):
        claimed.append(image)
    return claimed


def test_migrations_from_empty_and_again_on_reopen(target, clock, stores):
    first = stores()
    assert first.schema_version() == SCHEMA_VERSION
    submit(first, clock, "j1", "alice")
    first.close()
    again = stores()  # the steps already applied are not run again, the data stays
    assert again.migrate() == SCHEMA_VERSION
    assert again.schema_version() == SCHEMA_VERSION
    assert [job.id for job in again.jobs()] == ["j1"]
    with again._tx() as tx:
        assert tx.value("SELECT COUNT(*) FROM schema_version") == SCHEMA_VERSION
        tx.run("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (SCHEMA_VERSION + 1, 0.0))
    with pytest.raises(StoreError, match="newer"):
        stores()


def test_submit_list_get(store, clock):
    submit(store, clock, "j1", "alice", n=3, has_init_image=True)
    submit(store, clock, "j2", "alice")
    submit(store, clock, "j3", "bob")
    job = store.get_job("j1")
    assert job.owner == "alice" and job.settings == {"text_prompts": ["a lighthouse"], "seed": 7}
    assert job.has_init_image and not job.has_video and not job.cancelled
    images = store.images("j1")
    assert [(i.idx, i.seed, i.status) for i in images] == [(0, 7, "queued"), (1, 8, "queued"), (2, 9, "queued")]
    assert len({i.doc_id for i in images}) == 3
    assert store.image(images[1].doc_id).seed == 8
    assert store.owner_of(images[2].doc_id) == "alice" and store.owner_of("nothing") is None
    assert [j.id for j in store.jobs("alice")] == ["j2", "j1"]  # newest first
    assert [j.id for j in store.jobs()] == ["j3", "j2", "j1"]
    assert [j.id for j in store.jobs(before=store.get_job("j3").created, limit=1)] == ["j2"]  # paging
    assert store.get_job("nope") is None and store.images("nope") == []
    assert store.unfinished_jobs("alice") == 2
    with pytest.raises(TooManyUnfinished) as refused:
        submit(store, clock, "j4", "alice", max_unfinished=2)
    assert refused.value.count == 2 and store.get_job("j4") is None
    submit(store, clock, "j4", "bob", max_unfinished=2)


def test_fair_order_between_three_owners(store, clock):
    submit(store, clock, "a1", "alice", n=3)
    submit(store, clock, "a2", "alice")
    submit(store, clock, "b1", "bob", n=2)
    submit(store, clock, "c1", "carol")
    expected = [("a1", 0), ("b1", 0), ("c1", 0), ("a1", 1), ("b1", 1), ("a1", 2), ("a2", 0)]
    assert [(i.job_id, i.idx) for i in store.queue()] == expected
    assert [store.position(j) for j in ("a1", "b1", "c1", "a2")] == [1, 2, 3, 7]
    first = store.claim_next("gateway-a", LEASE_S, slots=1)
    assert (first.job_id, first.idx) == ("a1", 0)
    assert store.position("a1") is None  # one of its images is on its way
    store.mark_sent(first.doc_id, "gateway-a")
    store.finish(first.doc_id, "done")
    submit(store, clock, "d1", "dave")  # a newcomer goes before those already served
    claimed = claim_all(store)
    assert [(i.job_id, i.idx) for i in claimed] == [("b1", 0), ("c1", 0), ("d1", 0), ("a1", 1), ("b1", 1)] + [
        ("a1", 2),
        ("a2", 0),
    ]
    assert store.queue() == []


def test_claims_never_exceed_the_slots(store, clock):
    submit(store, clock, "j1", "alice", n=4)
    submit(store, clock, "j2", "bob", n=2)
    held = claim_all(store, slots=2)
    assert len(held) == 2 and store.in_flight() == 2
    store.mark_sent(held[0].doc_id, "gateway-a")  # sent or only claimed, both take a slot
    assert store.claim_next("gateway-b", LEASE_S, slots=2) is None
    store.finish(held[0].doc_id, "done")
    assert store.in_flight() == 1
    assert len(claim_all(store, "gateway-b", slots=2)) == 1
    assert store.in_flight() == 2
    assert len(claim_all(store, "gateway-b", slots=3)) == 1


def test_two_claimers_racing_never_take_the_same_image(stores):
    first, second = stores(moved_by_hand=False), stores(moved_by_hand=False)  # two connections, real time
    for round_ in range(50):
        slots = 1 if round_ % 2 else 2  # one free slot for two claimers, or two
        first.submit(f"j{round_}", f"owner{round_ % 3}", {}, [1, 2, 3])
        barrier = threading.Barrier(2)
        got: dict[str, object] = {}

        def claim(store, name, barrier=barrier, got=got, slots=slots):
            barrier.wait()
            got[name] = store.claim_next(name, LEASE_S, slots)

        threads = [threading.Thread(target=claim, args=(s, n)) for s, n in ((first, "a"), (second, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        images = [image for image in got.values() if image is not None]
        assert len(images) == slots, f"round {round_}: {len(images)} claimed with {slots} slots"
        assert len({image.doc_id for image in images}) == len(images), f"round {round_}: one image claimed twice"
        assert first.in_flight() == slots
        first.request_cancel(f"j{round_}")
        for image in images:
            first.finish(image.doc_id, "cancelled")
        assert first.in_flight() == 0


def test_a_claimer_that_stops_renewing_loses_its_images_after_the_lease(stores, clock):
    gateway_a, gateway_b = stores(), stores()
    submit(gateway_a, clock, "j1", "alice", n=3)
    sent, claimed_only = claim_all(gateway_a, "a", slots=2)
    gateway_a.mark_sent(sent.doc_id, "a")
    clock.advance(LEASE_S - 1)
    assert gateway_a.renew("a", LEASE_S) == 2  # a live claimer keeps its images
    clock.advance(LEASE_S - 1)
    assert gateway_b.expire("b", LEASE_S) == [] and gateway_b.claim_next("b", LEASE_S, slots=3) is not None
    clock.advance(2)  # gateway a died: it renews no more
    taken = gateway_b.expire("b", LEASE_S)
    assert [(i.job_id, i.idx, i.claimer, i.sent_doc_id) for i in taken] == [("j1", 0, "b", sent.doc_id)]
    assert gateway_a.expire("a", LEASE_S) == []  # handed to one claimer only
    assert gateway_a.renew("a", LEASE_S) == 0 and gateway_a.claimed_by("a") == []
    # the claimed but unsent image went back to the queue: another claimer takes it
    again = gateway_b.claim_next("b", LEASE_S, slots=3)
    assert (again.job_id, again.idx, again.doc_id) == ("j1", 1, claimed_only.doc_id)
    assert gateway_a.mark_sent(claimed_only.doc_id, "a") is None  # no longer a's to send
    # b decides the taken image was lost: it goes again, under a new Document id
    new_id = gateway_b.requeue(sent.doc_id)
    assert new_id and new_id != sent.doc_id
    resent = gateway_b.claim_next("b", LEASE_S, slots=3)
    assert resent.doc_id == new_id
    assert gateway_b.mark_sent(new_id, "b").attempt == 2
    assert gateway_b.owner_of(sent.doc_id) == "alice"  # the first sending is remembered


def test_a_document_id_is_never_sent_twice(store, clock):
    submit(store, clock, "j1", "alice")
    image = store.claim_next("a", LEASE_S, slots=1)
    assert store.mark_sent(image.doc_id, "a").status == "waiting"
    assert store.mark_sent(image.doc_id, "a") is None  # already on its way
    store.requeue(image.doc_id, new_doc_id=image.doc_id)  # a careless caller keeps the old id
    again = store.claim_next("a", LEASE_S, slots=1)
    with pytest.raises(AlreadySent):
        store.mark_sent(again.doc_id, "a")
    assert store.image(image.doc_id).status == "queued"  # nothing recorded


def test_progress_and_the_end(store, clock):
    submit(store, clock, "j1", "alice")
    image = store.claim_next("a", LEASE_S, slots=1)
    store.mark_sent(image.doc_id, "a")
    assert store.update_progress(image.doc_id, status="running", step=2, total=5, started=clock(), frame_step=2)
    now = store.image(image.doc_id)
    assert (now.status, now.step, now.total, now.started, now.frame_step) == ("running", 2, 5, clock(), 2)
    with pytest.raises(ValueError):
        store.update_progress(image.doc_id, status="done")
    with pytest.raises(ValueError):
        store.update_progress(image.doc_id, owner="mallory")
    assert store.finish(image.doc_id, "failed", step=3, error_code="sampler_died", error="the sampler died")
    assert not store.finish(image.doc_id, "done")  # the first end stays
    assert not store.update_progress(image.doc_id, step=4)
    ended = store.image(image.doc_id)
    assert (ended.status, ended.step, ended.error_code, ended.claimer) == ("failed", 3, "sampler_died", None)
    assert store.in_flight() == 0 and store.unfinished_jobs("alice") == 0


def test_cancel(store, clock):
    submit(store, clock, "j1", "alice", n=3)
    running = store.claim_next("a", LEASE_S, slots=2)
    store.mark_sent(running.doc_id, "a")
    claimed = store.claim_next("a", LEASE_S, slots=2)
    assert store.request_cancel("j1") == [running.doc_id]  # the Flow must be told about that one
    assert store.request_cancel("j1", "shutdown") == [running.doc_id]
    assert store.cancel_reason(running.doc_id) == "cancelled"  # the first reason stays
    assert [i.status for i in store.images("j1")] == ["waiting", "cancelled", "cancelled"]
    assert store.mark_sent(claimed.doc_id, "a") is None
    assert store.get_job("j1").cancelled and store.queue() == []
    store.finish(running.doc_id, "cancelled", step=1)
    assert store.unfinished_jobs("alice") == 0 and store.in_flight() == 0


def test_time_to_live(store, clock):
    submit(store, clock, "old_done", "alice")
    submit(store, clock, "old_running", "alice")
    done = store.images("old_done")[0]
    store.request_cancel("old_done")
    running = store.claim_next("a", LEASE_S, slots=1)
    store.mark_sent(running.doc_id, "a")
    clock.advance(100)
    submit(store, clock, "new_done", "bob")
    store.request_cancel("new_done")
    clock.advance(50)
    assert store.prune(ttl_s=120) == ["old_done"]  # unfinished jobs and recent ones stay
    assert store.get_job("old_done") is None and store.image(done.doc_id) is None
    assert {j.id for j in store.jobs()} == {"old_running", "new_done"}
    store.finish(running.doc_id, "done")
    clock.advance(121)
    assert sorted(store.prune(ttl_s=120)) == ["new_done", "old_running"]
    assert store.owner_of(running.doc_id) is None  # its sending went with it


def test_tokens_are_kept_as_hashes(store):
    token = "a-token-of-twenty-chars"
    owner = store.add_token(token, label="alice")
    assert store.check_token(token) == owner and len(owner) == 16
    assert store.check_token(token + "x") is None
    with store._tx(write=False) as tx:
        rows = tx.rows("SELECT * FROM tokens")
    assert rows[0]["hash"] == token_hash(token) and token not in str(rows)
    assert store.revoke_token(owner) == 1 and store.check_token(token) is None
    assert store.tokens()[0]["revoked"] is not None
    store.add_token(token)  # accepted again, its label kept
    assert store.check_token(token) == owner and store.tokens()[0]["label"] == "alice"
    assert store.revoke_token(token) == 1 and store.check_token(token) is None
    with pytest.raises(ValueError):
        store.add_token("short")


def test_the_default_store_is_private_to_one_user_and_one_server(tmp_path):
    home = config.load({})  # XDG_STATE_HOME unset: ~/.local/state
    assert home.state_dir == Path.home() / ".local" / "state" / "disco-diffusion"
    settings = config.load({"XDG_STATE_HOME": str(tmp_path / "state")})
    assert settings.database_url is None
    first, second = settings.store_target(51000), settings.store_target(52000)
    assert first == str(tmp_path / "state" / "disco-diffusion" / "51000" / "jobs.sqlite3") and first != second
    assert not first.startswith(tempfile.gettempdir() + "/disco")  # no folder every user's server shares
    assert config.load({"XDG_STATE_HOME": "relative"}).state_dir == home.state_dir  # XDG wants absolute paths
    assert config.load({"DISCO_STATE_DIR": str(tmp_path / "mine")}).store_target(1) == str(
        tmp_path / "mine" / "1" / "jobs.sqlite3"
    )
    url = "postgresql://disco@db:5432/disco"
    assert config.load({"DISCO_DATABASE_URL": url}).store_target(51000) == url
    with pytest.raises(
        config.ConfigError,
        match="DISCO_DATABASE_URL: .* is not a database URL; allowed: a URL starting with postgresql:",
    ):
        config.load({"DISCO_DATABASE_URL": "mysql://db/disco"})
    store = open_store(first)
    store.close()
    assert stat.S_IMODE(Path(first).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(first).parent.stat().st_mode) == 0o700


def test_a_lost_postgresql_connection_is_made_again(postgres, clock):
    import psycopg

    store = open_store(postgres.new_database(), clock)
    submit(store, clock, "j1", "alice")
    with psycopg.connect(store.url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    with pytest.raises(psycopg.OperationalError):
        store.get_job("j1")  # the call that finds the connection gone fails
    assert store.get_job("j1").owner == "alice"  # the next one connects again
    store.close()


def test_images_of_several_jobs_and_repairs(store, clock):
    submit(store, clock, "j1", "alice", n=2)
    submit(store, clock, "j2", "bob")
    found = store.images_of(["j1", "j2", "none"])
    assert [(i.job_id, i.idx) for i in found["j1"]] == [("j1", 0), ("j1", 1)] and len(found["j2"]) == 1
    assert found["none"] == []
    assert store.set_image("j1", 1, status="running", step=2)
    assert (store.images("j1")[1].status, store.images("j1")[1].step) == ("running", 2)
    with pytest.raises(ValueError):
        store.set_image("j1", 1, owner="mallory")


def _claim_until_empty(target: str, claimer: str, start, results) -> None:
    """In a child process: claim and send images until none is left; the Document ids it got."""
    store = open_store(target)
    start.wait()
    got = []
    while (image := store.claim_next(claimer, LEASE_S, slots=1000)) is not None:
        if store.mark_sent(image.doc_id, claimer) is not None:
            got.append(image.doc_id)
    store.close()
    results.put((claimer, got))


def test_two_claimer_processes_share_out_the_queue(target, store, clock):
    import multiprocessing

    for n in range(20):
        submit(store, clock, f"j{n}", f"owner{n % 4}", n=3)
    every = {image.doc_id for n in range(20) for image in store.images(f"j{n}")}
    context = multiprocessing.get_context("fork")
    results, start = context.Queue(), context.Barrier(2)
    workers = [context.Process(target=_claim_until_empty, args=(target, n, start, results)) for n in ("a", "b")]
    for worker in workers:
        worker.start()
    got = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    assert not set(got["a"]) & set(got["b"])  # no image claimed by both
    assert set(got["a"]) | set(got["b"]) == every and len(got["a"]) + len(got["b"]) == len(every)


def test_changes_are_told_after_commit_and_with_postgresql_to_other_connections(target, store, clock):
    heard: list[str] = []
    store.listeners.append(heard.append)
    listener = None
    if target.startswith("postgresql://"):
        import psycopg

        from disco_service.server.store.base import CHANNEL

        listener = psycopg.connect(target, autocommit=True)
        listener.execute(f"LISTEN {CHANNEL}")
    submit(store, clock, "j1", "alice", n=2)
    image = store.claim_next("gateway-a", LEASE_S, 1)  # a claim alone changes nothing a caller sees
    assert heard == ["j1"]
    store.mark_sent(image.doc_id, "gateway-a")
    store.update_progress(image.doc_id, status="running", step=1, total=3)
    store.finish(image.doc_id, "done")
    store.request_cancel("j1")
    assert heard == ["j1"] * 5
    with pytest.raises(TooManyUnfinished):  # a refused change is not told
        submit(store, clock, "j2", "alice", max_unfinished=0)
    assert heard == ["j1"] * 5
    if listener is not None:
        told = [notice.payload for notice in listener.notifies(timeout=1, stop_after=5)]
        listener.close()
        assert told == ["j1"] * 5


def test_pause_drain_and_the_daily_quota_hold_for_every_claimer(stores, clock):
    from disco_service.server.quotas import Quota, QuotaExceeded

    a, b = stores(), stores()
    submit(a, clock, "j1", "alice")
    b.set_switches(paused=True)
    assert a.claim_next("gateway-a", LEASE_S, 1) is None and a.switches() == {"paused": True, "draining": False}
    a.set_switches(paused=False, draining=True)
    with pytest.raises(QuotaExceeded, match="draining") as refused:
        submit(b, clock, "j2", "bob")
    assert refused.value.status == 503
    a.set_switches(draining=False)
    assert b.claim_next("gateway-b", LEASE_S, 1).job_id == "j1"
    a.quota = b.quota = Quota(max_images_per_day=3)
    submit(a, clock, "j3", "bob", n=2)
    with pytest.raises(QuotaExceeded, match="asked for 2 images today and this job adds 2") as refused:
        submit(b, clock, "j4", "bob", n=2)  # the other gateway counts the same day
    assert refused.value.status == 429 and b.usage("bob")["images"] == 2
    submit(b, clock, "j5", "bob", n=1)
    clock.advance(86400)  # the next day starts afresh
    submit(b, clock, "j6", "bob", n=3)
    assert b.usage("bob")["images"] == 3
