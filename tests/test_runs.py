"""Runs kept by name (``batch_name``): reloaded from ``output_dir`` with ``load_run(name,
output_dir=...)`` without a Flow, and fetched from a server with ``load_run(name, host=...)``.
The route itself, token by token, is tested in-process in tests/test_http_api.py."""

from __future__ import annotations

import base64

import pytest
from docarray import Document, DocumentArray
from fake_flow import png

from disco.settings import SettingsError
from disco_service.client import api
from disco_service.outputs import run_file

TINY = {"text_prompts": ["x"], "width_height": [64, 64], "steps": 2, "skip_steps": 0}


def uri(colour) -> str:
    return "data:image/png;base64," + base64.b64encode(png(colour)).decode()


def painted(shade: int):
    """A stand-in for the Flow: every image done, its final image and two frames of colour ``shade``."""

    async def run_jobs(address, docs, show_progress, on_finished_frame=None, token=None):
        done = DocumentArray()
        for i, sent in enumerate(docs):
            doc = Document(id=sent.id, uri=uri((shade, i, 9)), tags={**sent.tags, "status": "done"})
            for step in (1, 2):
                doc.chunks.append(Document(uri=uri((shade, i, step)), tags={"step": step, "cur_t": 5.0 - step}))
            done.append(doc)
        return done, []

    return run_jobs


def same_run(got, want) -> None:
    assert [d.id for d in got] == [d.id for d in want] and len(got)
    for a, b in zip(got, want, strict=True):
        assert a.uri == b.uri and a.tags == b.tags
        assert [(c.uri, c.tags) for c in a.chunks] == [(c.uri, c.tags) for c in b.chunks]


def test_a_local_run_is_reloaded_from_output_dir_by_its_name(monkeypatch, tmp_path):
    out = str(tmp_path)
    monkeypatch.setattr(api, "run_jobs", painted(10))
    first = api.generate_image(**TINY, n_batches=2, seed=4, batch_name="sea", output_dir=out, host="grpc://h:1")
    assert run_file(out, "sea") == tmp_path / "runs" / "sea.json"
    same_run(api.load_run("sea", output_dir=out), first)  # the files written are in its tags, as returned
    assert all(tag for d in api.load_run("sea", output_dir=out) for tag in d.tags["files"])
    # a later run of the name replaces it; a run without a name is not kept
    monkeypatch.setattr(api, "run_jobs", painted(90))
    later = api.generate_image(**TINY, n_batches=1, seed=8, batch_name="sea", output_dir=out, host="grpc://h:1")
    api.generate_image(**TINY, n_batches=1, seed=9, output_dir=out, host="grpc://h:1")
    again = api.load_run("sea", output_dir=out)
    same_run(again, later)
    assert again[0].uri != first[0].uri and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["sea.json"]
    with pytest.raises(api.RunNotFound, match="no run named 'ships' in"):
        api.load_run("ships", output_dir=out)
    with pytest.raises(SettingsError, match="^batch_name: ''"):
        api.load_run("", output_dir=out)
    with pytest.raises(ValueError, match="runs are fetched from the server's HTTP port"):
        api.load_run("sea", host="grpc://127.0.0.1:51000")


def test_a_served_run_is_fetched_by_name_from_the_server(served_flow, served_http, tmp_path):
    from conftest import TINY as SERVED_TINY

    settings = {**SERVED_TINY, "seed": 21, "n_batches": 2, "batch_name": "fetched", "output_dir": str(tmp_path)}
    made = api.generate_image(**settings, host=served_flow, progress=False)
    fetched = api.load_run("fetched", host=served_http)
    assert [d.id for d in fetched] == [d.id for d in made] and len(fetched) == 2
    for got, want in zip(fetched, made, strict=True):
        assert got.uri == want.uri and len(got.chunks) == len(want.chunks) >= 2
        assert [(c.uri, c.tags) for c in got.chunks] == [(c.uri, c.tags) for c in want.chunks]
        assert {k: v for k, v in got.tags.items() if k != "files"} == {
            k: v for k, v in want.tags.items() if k != "files"
        }
    with pytest.raises(api.RunNotFound):
        api.load_run("never-made", host=served_http)
