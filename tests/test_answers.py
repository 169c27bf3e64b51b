"""Honest answers: nothing that did not happen comes back as a success, over REST or gRPC.

A wrong endpoint, an image that did not finish, ``n_batches`` in a one-image Document, an
``init_image`` path the server will not open, a Document id used twice: each is an error that
says what was wrong, never a 200 with the Document unchanged or half made.
"""

import json
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import TINY
from docarray import Document, DocumentArray
from jina import Client

from disco.settings import SettingsError, validate_settings
from disco_service import wire
from disco_service.transport import classify
from disco_service.transport import post as grpc_post


def rest(address: str, body: dict) -> tuple[int, dict]:
    """POST /post; (HTTP status, answer), also for error statuses."""
    request = urllib.request.Request(f"{address}/post", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def error_of(answer: dict) -> tuple[str, str]:
    status = answer["header"]["status"]
    return status["exception"]["name"], status["exception"]["args"][0]


def one_image(**changes) -> dict:
    """The tags of one image as a plain client sends them (no bookkeeping tags)."""
    return {k: v for k, v in {**wire.settings_to_tags(validate_settings(**TINY, n_batches=1)), **changes}.items()}


# ----- the trust boundary, without a Flow -----


def test_a_document_is_one_image_and_the_server_opens_no_paths():
    assert wire.settings_from_request({"text_prompts": ["x"]}).n_batches == 1  # not given: one image
    with pytest.raises(SettingsError, match=r"n_batches: a Document is one image: send one Document per image"):
        wire.settings_from_request({"text_prompts": ["x"], "n_batches": 2})
    with pytest.raises(SettingsError, match=r"got n_batches 2 with batch_index 2"):
        wire.settings_from_request({"text_prompts": ["x"], "n_batches": 2, "batch_index": 2})
    assert wire.settings_from_request({"text_prompts": ["x"], "n_batches": 2, "batch_index": 1}).n_batches == 2
    for source in ("/some/path.jpg", "https://example.com/a.png"):
        with pytest.raises(SettingsError, match=r"init_image: the server does not open paths or URLs: send the image"):
            wire.settings_from_request({"text_prompts": ["x"], "init_image": source})


# ----- over the served Flow -----


def test_an_unknown_endpoint_is_an_error_naming_the_served_ones(served_flow, served_http):
    code, answer = rest(served_http, {"execEndpoint": "/create", "data": [{"tags": one_image()}]})
    assert code == 400
    name, message = error_of(answer)
    assert name == "UnknownEndpoint" and answer["code"] == "endpoint_unknown"
    assert message == "unknown endpoint '/create': this Flow serves /generate, /progress, /cancel and /forget"
    with pytest.raises(Exception, match=r"unknown endpoint .{1,2}/generat.{1,2}: this Flow serves /generate") as raised:
        Client(host=served_flow).post("/generat", DocumentArray([Document(tags=one_image())]))
    assert classify(raised.value).code == wire.ErrorCode.ENDPOINT_UNKNOWN


def test_rest_refuses_n_batches_and_paths_in_a_one_image_request(served_flow, served_http):
    code, answer = rest(served_http, {"execEndpoint": "/generate", "data": [{"tags": one_image(n_batches=2)}]})
    assert code == 400 and error_of(answer) == (
        "SettingsError",
        "n_batches: a Document is one image: send one Document per image (n_batches 1), got n_batches 2",
    )
    assert (answer["code"], answer["setting"]) == ("setting_invalid", "n_batches")
    with pytest.raises(Exception, match="SettingsError") as raised:  # over gRPC: the code and the setting
        Client(host=served_flow).post("/generate", DocumentArray([Document(tags=one_image(n_batches=2))]))
    assert (classify(raised.value).code, classify(raised.value).setting) == ("setting_invalid", "n_batches")
    code, answer = rest(
        served_http, {"execEndpoint": "/generate", "data": [{"tags": one_image(init_image="/some/path.jpg")}]}
    )
    assert code == 400
    assert error_of(answer)[1] == (
        "init_image: the server does not open paths or URLs: send the image's bytes in doc.blob, got '/some/path.jpg'"
    )


def test_rest_an_image_that_did_not_finish_is_an_error_not_a_success(served_http):
    """The README's old one-liner: a REST caller that never polls; its job is stopped as abandoned."""
    doc_id = uuid.uuid4().hex
    tags = one_image(steps=1000, skip_steps=0, display_rate=1, client_timeout_s=2)
    code, answer = rest(served_http, {"execEndpoint": "/generate", "data": [{"id": doc_id, "tags": tags}]})
    assert code == 409
    name, message = error_of(answer)
    assert name == "ImageNotFinished"
    assert message.startswith(f"image {doc_id} was stopped as abandoned (nobody polled /progress for it) at step ")
    assert message.endswith(
        f"of 1000; its frames so far are kept in the result store (GET /results/{doc_id} on the HTTP port)"
    )
    with urllib.request.urlopen(f"{served_http}/results/{doc_id}", timeout=30) as response:
        record = json.load(response)
    assert record["status"] == "abandoned" and 1 <= record["steps_done"] < 1000
    assert "final" not in record["files"] and len(record["files"]["frames"]) == record["steps_done"]


def test_an_image_that_did_not_finish_comes_back_to_a_caller_that_accepts_it(served_flow):
    docs = DocumentArray([Document(tags=one_image(steps=1000, skip_steps=0, client_timeout_s=2))])
    with pytest.raises(Exception, match=r"ImageNotFinished.*was stopped as abandoned") as raised:
        Client(host=served_flow).post("/generate", docs)
    assert classify(raised.value).code == wire.ErrorCode.IMAGE_NOT_FINISHED
    docs = DocumentArray([Document(tags=one_image(steps=1000, skip_steps=0, client_timeout_s=2))])
    doc = Client(host=served_flow).post("/generate", docs, parameters={wire.ACCEPT_UNFINISHED: True})[0]
    assert doc.tags["status"] == "abandoned" and len(doc.chunks) >= 1


def test_a_document_id_is_never_used_twice(served_flow):
    import asyncio

    client = Client(host=served_flow)
    doc_id = uuid.uuid4().hex
    assert client.post("/generate", DocumentArray([Document(id=doc_id, tags=one_image())]))[0].tags["status"] == "done"
    client.post("/cancel", DocumentArray([Document(id=doc_id)]), target_executor=wire.JOB_STATE_EXECUTOR)
    # gRPC's text of the error escapes quotes: .{1,2}
    with pytest.raises(
        Exception, match=rf"Document id .{{1,2}}{doc_id}.{{1,2}} was already used for an image \(done\)"
    ) as raised:
        client.post("/generate", DocumentArray([Document(id=doc_id, tags=one_image())]))
    assert classify(raised.value).code == wire.ErrorCode.DOCUMENT_ID_IN_USE
    # forgotten by the job board, the id is still known to the result store
    asyncio.run(grpc_post(Client(host=served_flow, asyncio=True), "/forget", DocumentArray([Document(id=doc_id)]),
                          wire.JOB_STATE_EXECUTOR))  # fmt: skip
    with pytest.raises(Exception, match=rf"Document id .{{1,2}}{doc_id}.{{1,2}} was already used for an image"):
        client.post("/generate", DocumentArray([Document(id=doc_id, tags=one_image())]))
