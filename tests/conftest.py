import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from lane import REAL_SIZE_FIXTURES, SLOW_FIXTURES, guarded
from workers import GroupScheduling, name_groups_folder, write_groups

ROOT = Path(__file__).resolve().parent.parent
# a file the run appends each failure to, one line each, and an internal error's end (.ci/run prints it
# last, where a long traceback would otherwise push the names of the failed tests out of sight)
FAILURES_LOG = "DISCO_TEST_FAILURES"

REFERENCE = ROOT / "tests" / "fixtures" / "reference"
# a quick image on the test weights: 64x64, a few steps, one small cutout batch
TINY = dict(
    width_height=[64, 64],
    steps=4,
    skip_steps=1,
    display_rate=2,
    cut_overview="[1]*1000",
    cut_innercut="[1]*1000",
    cutn_batches=1,
    use_gpu=False,
)


def hand_made_png(width: int, height: int, bit_depth: int, colour_type: int, pixel: bytes = b"") -> bytes:
    """A PNG of one colour that Pillow cannot write (16-bit colour), or only its header when ``pixel``
    is empty (a picture that claims any size, e.g. a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress((b"\0" + pixel * width) * height)) if pixel else b""
    return b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IEND", b"")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist runs a worker per core: one thread each
        import torch

        torch.set_num_threads(1)
    elif getattr(config.option, "numprocesses", None):  # the controller, before its workers start
        name_groups_folder()


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects: the marks added here count
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that asks for a fixture starting a Flow, a server, a browser, a proxy
    or a kernel, or for a real-size model (tests/lane.py), so ``pytest -m "not slow"`` is the fast
    lane; and tell pytest-xdist's controller each test's group (tests/workers.py)."""
    for item in items:
        if (SLOW_FIXTURES | REAL_SIZE_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    write_groups(items)


def _log_failure(text: str) -> None:
    path = os.environ.get(FAILURES_LOG)
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller hears every worker's reports
        with open(path, "a", encoding="utf-8") as log:
            log.write(text.rstrip() + "\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        lines = report.longreprtext.strip().splitlines() or ["(no message)"]
        error = next((line for line in lines if line.startswith("E ")), lines[-1])  # the error's first line
        _log_failure(f"FAILED {report.nodeid} ({report.when}): {error[:300]} [{lines[-1][:200]}]")


def pytest_internalerror(excrepr, excinfo) -> None:
    _log_failure("INTERNALERROR, its last lines:\n" + "\n".join(str(excrepr).splitlines()[-15:]))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: share the tests out by group (tests/workers.py)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> GroupScheduling:
    return GroupScheduling(config, log)


@pytest.fixture(autouse=True)
def process_guard(request: pytest.FixtureRequest):
    """Around each test not marked ``slow``: starting a Flow, serve.py, Jina, a browser, nginx or a
    kernel, itself or through a child, fails it (tests/lane.py). Yields the guard (None for a slow test)."""
    if request.node.get_closest_marker("slow"):
        yield None
        return
    with guarded() as guard:
        yield guard
    if problems := guard.problems():
        pytest.fail(
            "a test of the fast lane started a program of the slow lane: mark it @pytest.mark.slow\n"
            + "\n".join(problems),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_models():
    """The narrow test UNet and the secondary model (recipe weights) and a small seeded random CLIP
    (``small_clip``) standing for RN50."""
    import json

    import torch
    from recipe import recipe_state_dict

    from disco.sampler import Models
    from disco.secondary import build_secondary
    from disco.unet import UNetConfig, build_unet

    meta = json.loads((REFERENCE / "meta.json").read_text())
    unet = build_unet(
        UNetConfig.from_guided_diffusion(meta["tiny_unet_config"]),
        recipe_state_dict(REFERENCE / "manifest_tiny_unet.json", meta["seeds"]["tiny_weights"]),
    )
    secondary = build_secondary(
        recipe_state_dict(REFERENCE / "manifest_secondary_model_imagenet_2.json", meta["seeds"]["secondary_weights"])
    )
    torch.manual_seed(0)
    return Models(unet=unet, clip=small_clip(), secondary=secondary)


@pytest.fixture(scope="session")
def rn50_models(tiny_models):
    """``tiny_models`` with a seeded random CLIP RN50 of the real architecture (224 px cutouts), for
    the tests about RN50 itself: the guidance of before bit for bit, folded batch norms."""
    import torch

    from disco.clip_model import load_clip
    from disco.sampler import Models

    torch.manual_seed(0)
    return Models(unet=tiny_models.unet, clip=load_clip(None), secondary=tiny_models.secondary)


def small_clip():
    """A CLIP of RN50's kind (a ModifiedResNet image tower, 1024-wide embeddings, RN50's tokenizer
    and 77-token context) but tiny and at 64 px, with random weights from torch's global generator:
    the engine's tests guide with it at a fiftieth of RN50's cost per cutout. Tests about RN50 itself
    load it with ``disco.clip_model.load_clip``; the Flow's tests load RN50 from test weights."""
    import torch
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, image_size=64, head_width=16)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
    clip = CLIP(embed_dim=1024, vision_cfg=vision, text_cfg=text)
    return clip.eval().requires_grad_(False).to(memory_format=torch.channels_last)


# ----- the product end to end: recipe weights under their real names, and the Flow's environment -----


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from filelock import FileLock
    from make_test_weights import make

    # one folder for the run: pytest-xdist's workers share their base folder's parent
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = shared / "models"
    with FileLock(str(shared / "models.lock")):
        make(
            directory,
            [
                "512x512_diffusion_uncond_finetune_008100.pt",
                "secondary_model_imagenet_2.pth",
                "open_clip_rn50_openai.safetensors",
                "vgg16-397923af.pth",
                "ViT-B-32.pt",  # a second CLIP model for clip_models, in OpenAI's layout
                "raft_large_C_T_SKHT_V2-ff5fadd5.pth",  # RAFT, for Video Input's optical flow (on by default)
            ],
        )
    return directory


@pytest.fixture(scope="session")
def flow_env(model_dir, tmp_path_factory):
    env = {
        "DISCO_MODEL_DIR": str(model_dir),
        "DISCO_RESULTS_DIR": str(tmp_path_factory.mktemp("results")),
        "DISCO_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "DISCO_USE_GPU": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


SERVER_CLIENT_TIMEOUT_S = 20  # the served Flow stops jobs nobody polled for this long


@pytest.fixture(scope="session")
def flow_ports() -> tuple[int, int]:
    """Free ports for the served Flow's gRPC and HTTP servers."""
    from disco_service.client.local_flow import free_port

    return free_port(), free_port()


@pytest.fixture(scope="session")
def served_output_dir(tmp_path_factory) -> Path:
    """The served Flow's output folder (DISCO_OUTPUT_DIR): the page's gallery shows its images."""
    return tmp_path_factory.mktemp("served_outputs")


@pytest.fixture(scope="session")
def served_flow(flow_env, flow_ports, served_output_dir, tmp_path_factory):
    """``jina flow --uses flow.yml`` in a subprocess (the file's ports swapped for free ones)."""
    from served import served

    port, http_port = flow_ports
    config = tmp_path_factory.mktemp("flow") / "flow.yml"
    text = (ROOT / "flow.yml").read_text()
    assert "port: [51000, 51001]" in text
    config.write_text(text.replace("port: [51000, 51001]", f"port: [{port}, {http_port}]"))
    command = [str(Path(sys.executable).parent / "jina"), "flow", "--uses", str(config)]
    env = {**flow_env, "DISCO_CLIENT_TIMEOUT_S": str(SERVER_CLIENT_TIMEOUT_S)}
    env["DISCO_OUTPUT_DIR"] = str(served_output_dir)
    with served(command, port, env, config.with_suffix(".log"), cwd=ROOT) as address:
        yield address


@pytest.fixture(scope="session")
def served_http(served_flow, flow_ports) -> str:
    """The served Flow's HTTP address (REST and the web page)."""
    return f"http://127.0.0.1:{flow_ports[1]}"


# two callers of a service with tokens (each at least 16 characters, as DISCO_API_TOKENS requires)
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}


@pytest.fixture(scope="session")
def token_flow(flow_env, tmp_path_factory):
    """A second served Flow, with ``DISCO_API_TOKENS`` (alice's and bob's, from a file) and one job per
    token at a time: yields (gRPC address, HTTP address)."""
    from served import served

    from disco_service.client.local_flow import free_port

    port, http_port = free_port(), free_port()
    folder = tmp_path_factory.mktemp("token_flow")
    config = folder / "flow.yml"
    config.write_text((ROOT / "flow.yml").read_text().replace("port: [51000, 51001]", f"port: [{port}, {http_port}]"))
    tokens = folder / "tokens"
    tokens.write_text("# the service's callers\n" + "\n".join(TOKENS.values()) + "\n")
    env = {**flow_env, "DISCO_API_TOKENS": f"@{tokens}", "DISCO_MAX_JOBS_PER_TOKEN": "1"}
    env["DISCO_CLIENT_TIMEOUT_S"] = "600"  # its plain gRPC calls do not poll: never abandoned, even on a busy CPU
    env.update(DISCO_RESULTS_DIR=str(folder / "results"))
    env.update(DISCO_STATE_DIR=str(folder / "state"))
    command = [str(Path(sys.executable).parent / "jina"), "flow", "--uses", str(config)]
    with served(command, port, env, folder / "flow.log", cwd=ROOT) as address:
        yield address, f"http://127.0.0.1:{http_port}"


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the whole session (tests/pg_cluster.py), or a skip saying how to get it."""
    from pg_cluster import INSTALL_HINT, cluster

    found = cluster()
    if found is None:
        pytest.skip(INSTALL_HINT)
    yield found
    found.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a fresh state store lives: a new SQLite file, or a new database of the test cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "jobs.sqlite3")
    return request.getfixturevalue("postgres").new_database()
