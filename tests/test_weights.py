"""The weights downloader against a local HTTP server on 127.0.0.1 serving files the test makes.

The server answers Range requests and has switches to cut a transfer at a byte offset, to
ignore Range, to answer 404 and to go slowly; it records every request it gets.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from disco import weights
from disco.weights import ModelFile, WeightsUnavailable, ensure

ROOT = Path(__file__).resolve().parent.parent
SIZE = 300_000


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_at: int | None = None  # never send bytes at or past this offset (then drop the connection)
    cuts: list[int] = field(default_factory=list)  # per request, in turn, before cut_at applies
    ignore_range: bool = False
    delay_s: float = 0.0  # pause between 16 KiB pieces
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def ranges(self) -> list[str | None]:
        return [r for _, r in self.requests]


class Server:
    def __init__(self) -> None:
        self.state = Served()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                state.requests.append((self.path, self.headers.get("Range")))
                data = state.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not state.ignore_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = state.cuts.pop(0) if state.cuts else state.cut_at
                end = len(data) if cut is None else max(start, min(len(data), cut))
                for i in range(start, end, 16384):
                    self.wfile.write(data[i : min(end, i + 16384)])
                    self.wfile.flush()
                    time.sleep(state.delay_s)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "BACKOFF_S", 0.0)


def random_bytes(seed: int, n: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(server: Server, name: str, data: bytes, size: int | None = None) -> ModelFile:
    server.state.files[name] = data
    return ModelFile(name, sha(data), size, (server.url(name),), "test file")


def executors_env() -> dict[str, str]:
    return dict(os.environ)  # the engine is installed: python -m disco_service.client.download runs from anywhere


def test_download_checks_sha256_and_lands_under_the_final_name(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    state = {"layer.weight": torch.randn(96, 64), "layer.bias": torch.zeros(96)}
    torch.save(state, buffer)
    data = buffer.getvalue()
    file = publish(server, "tiny_state.pt", data, size=len(data))

    path = ensure(file, tmp_path, progress=False)

    assert path == tmp_path / "tiny_state.pt"
    assert path.read_bytes() == data
    assert not (tmp_path / "tiny_state.pt.part").exists()
    assert (tmp_path / "tiny_state.pt.sha256ok").is_file()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["layer.weight"], state["layer.weight"])


def test_cut_transfer_keeps_part_and_the_next_call_resumes_it(server: Server, tmp_path: Path) -> None:
    data = random_bytes(1)
    file = publish(server, "big.bin", data)
    server.state.cut_at = 120_000

    with pytest.raises(WeightsUnavailable) as failure:
        ensure(file, tmp_path, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 120_000 and part.read_bytes() == data[:120_000]
    assert not (tmp_path / "big.bin").exists()
    assert "will be resumed" in str(failure.value)
    # the first request got bytes; the retry asked for the rest, got none, and then it gave up
    assert server.state.ranges()[:2] == [None, "bytes=120000-"]

    server.state.cut_at = None
    server.state.requests.clear()
    path = ensure(file, tmp_path, progress=False)

    assert server.state.ranges() == ["bytes=120000-"]
    assert sha(path.read_bytes()) == file.sha256
    assert not part.exists()


def test_interrupted_transfers_that_make_progress_are_resumed_within_one_call(server: Server, tmp_path: Path) -> None:
    data = random_bytes(2)
    file = publish(server, "flaky.bin", data)
    server.state.cuts = [50_000, 130_000, 260_000]  # each attempt gets further: none counts as a failure

    path = ensure(file, tmp_path, progress=False)

    assert path.read_bytes() == data
    assert server.state.ranges() == [None, "bytes=50000-", "bytes=130000-", "bytes=260000-"]


def test_a_server_that_ignores_range_makes_the_download_start_over(server: Server, tmp_path: Path) -> None:
    data = random_bytes(3)
    file = publish(server, "norange.bin", data)
    (tmp_path / "norange.bin.part").write_bytes(b"\0" * 70_000)  # not even the right bytes
    server.state.ignore_range = True

    path = ensure(file, tmp_path, progress=False)

    assert server.state.ranges() == ["bytes=70000-"]
    assert path.read_bytes() == data


def test_wrong_checksum_is_rejected_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    data = random_bytes(4)
    file = publish(server, "bad.bin", data)
    wrong = ModelFile(file.name, sha(b"something else"), None, file.urls)

    with pytest.raises(WeightsUnavailable, match="checksum") as failure:
        ensure(wrong, tmp_path, progress=False)

    assert not (tmp_path / "bad.bin").exists()
    assert not (tmp_path / "bad.bin.part").exists()
    message = str(failure.value)
    assert "bad.bin" in message and str(tmp_path) in message and server.url("bad.bin") in message


def test_wrong_size_is_rejected_before_the_body(server: Server, tmp_path: Path) -> None:
    data = random_bytes(5)
    file = publish(server, "sized.bin", data, size=SIZE + 1)

    with pytest.raises(WeightsUnavailable, match=f"offers {SIZE} bytes, expected {SIZE + 1}"):
        ensure(file, tmp_path, progress=False)
    assert not (tmp_path / "sized.bin").exists()
    assert not (tmp_path / "sized.bin.part").exists()


def test_mirrors_are_tried_in_order(server: Server, tmp_path: Path) -> None:
    data = random_bytes(6)
    file = publish(server, "mirrored.bin", data)

    path = ensure(file, tmp_path, urls=[server.url("gone/mirrored.bin"), server.url("mirrored.bin")], progress=False)

    assert path.read_bytes() == data
    assert [p for p, _ in server.state.requests] == ["/gone/mirrored.bin", "/mirrored.bin"]  # 404: not retried


def test_when_every_mirror_fails_the_message_lists_each_url_and_its_error(server: Server, tmp_path: Path) -> None:
    file = ModelFile("absent.bin", sha(b"x"), None, (server.url("a/absent.bin"), server.url("b/absent.bin")))

    with pytest.raises(WeightsUnavailable) as failure:
        ensure(file, tmp_path, progress=False)

    message = str(failure.value)
    for url in file.urls:
        assert f"{url}: HTTP 404" in message
    assert f"save it as {tmp_path / 'absent.bin'}" in message
    assert "DISCO_MODEL_DIR" in message


def test_a_cached_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    data = random_bytes(7)
    file = publish(server, "cached.bin", data)
    ensure(file, tmp_path, progress=False)
    server.state.requests.clear()

    assert ensure(file, tmp_path, progress=False).read_bytes() == data
    (tmp_path / "cached.bin.sha256ok").unlink()  # without the stamp it hashes the file, still no request
    assert ensure(file, tmp_path, progress=False).read_bytes() == data
    assert (tmp_path / "cached.bin.sha256ok").is_file()
    assert server.state.requests == []


def test_a_damaged_cached_file_is_replaced(server: Server, tmp_path: Path) -> None:
    data = random_bytes(8)
    file = publish(server, "damaged.bin", data)
    path = ensure(file, tmp_path, progress=False)
    path.write_bytes(data[:-1] + b"!")  # same size, new mtime: the stamp no longer applies
    server.state.requests.clear()

    assert ensure(file, tmp_path, progress=False).read_bytes() == data
    assert len(server.state.requests) == 1


def test_checksums_json_names_other_sha256_values(server: Server, tmp_path: Path) -> None:
    data = random_bytes(9)
    name = "secondary_model_imagenet_2.pth"
    server.state.files[name] = data
    (tmp_path / "checksums.json").write_text(json.dumps({name: sha(data)}))

    path = ensure(name, tmp_path, urls=[server.url(name)], progress=False)

    assert path.read_bytes() == data


def test_two_processes_at_once_share_one_download(server: Server, tmp_path: Path) -> None:
    data = random_bytes(10)
    file = publish(server, "shared.bin", data)
    server.state.delay_s = 0.05  # about 1 s per transfer: the processes overlap
    code = (
        "import logging, sys; from disco.weights import ModelFile, ensure; "
        "logging.basicConfig(level=logging.INFO); "
        f"file = ModelFile('shared.bin', {file.sha256!r}, None, ({file.urls[0]!r},)); "
        "print(ensure(file, sys.argv[1], progress=False))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            env=executors_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]

    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == str(tmp_path / "shared.bin")
    assert (tmp_path / "shared.bin").read_bytes() == data
    assert len(server.state.requests) == 1  # the second process waited for the lock, then found the file
    assert sum("waiting for another process to finish shared.bin" in err for _, err in results) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_without_a_server_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    mirror = f"http://127.0.0.1:{closed_port()}"
    name = "secondary_model_imagenet_2.pth"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "disco_service.client.download",
            "--dir",
            str(tmp_path),
            "--mirror",
            mirror,
            "--quiet",
            name,
        ],
        env=executors_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started

    assert proc.returncode == 1
    assert elapsed < 10
    assert name in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert f"{mirror}/{name}" in proc.stderr
    assert f"save it as {tmp_path / name}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / name).exists()


def test_cli_downloads_from_a_mirror_and_prints_the_path(server: Server, tmp_path: Path) -> None:
    data = random_bytes(11)
    name = "secondary_model_imagenet_2.pth"
    server.state.files[name] = data
    (tmp_path / "checksums.json").write_text(json.dumps({name: sha(data)}))

    proc = subprocess.run(
        [sys.executable, "-m", "disco_service.client.download", "--dir", str(tmp_path), "--mirror", server.base, name],
        env=executors_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / name)
    assert (tmp_path / name).read_bytes() == data


def test_registry_entries_are_well_formed() -> None:
    assert {
        "512x512_diffusion_uncond_finetune_008100.pt",
        "256x256_diffusion_uncond.pt",
        "secondary_model_imagenet_2.pth",
        "dpt_large-midas-2f21e586.pt",
        "AdaBins_nyu.pt",
        "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
    } <= set(weights.REGISTRY)
    # the names of MiDaS's and RAFT's files carry the first 8 hex digits of their sha256
    assert weights.REGISTRY[weights.MIDAS_FILE].sha256.startswith("2f21e586")
    assert weights.REGISTRY[weights.RAFT_FILE].sha256.startswith("ff5fadd5")
    for name, file in weights.REGISTRY.items():
        assert file.name == name
        if file.sha256 is None:  # no public source gives it: accepted on a complete transfer, loaded strictly
            assert name == "open_clip_vit_b_16_laion2b_s34b_b88k.bin" and file.shown_size > 0
            continue
        assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
        assert len(file.urls) >= 1 and all(u.startswith("https://") for u in file.urls)
        assert len(set(file.urls)) == len(file.urls)


def test_model_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from disco_service import config

    monkeypatch.setenv("DISCO_MODEL_DIR", str(tmp_path))
    assert config.load().model_dir == tmp_path
    monkeypatch.delenv("DISCO_MODEL_DIR")
    assert config.load().model_dir == Path.home() / ".cache" / "disco-diffusion" == weights.default_model_dir()


def client_env(model_dir: Path, mirror: str) -> dict[str, str]:
    return {**os.environ, "DISCO_MODEL_DIR": str(model_dir), "DISCO_WEIGHTS_MIRROR": mirror}


def test_client_download_fetches_what_the_settings_need(server: Server, tmp_path: Path) -> None:
    needed = ["256x256_diffusion_uncond.pt", "open_clip_rn50_openai.safetensors", "secondary_model_imagenet_2.pth"]
    for i, name in enumerate(needed):
        server.state.files[name] = random_bytes(20 + i)
    (tmp_path / "checksums.json").write_text(json.dumps({n: sha(server.state.files[n]) for n in needed}))

    proc = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--download", "--diffusion_model", "256x256_diffusion_uncond"],
        env=client_env(tmp_path, server.base),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(str(tmp_path / n) for n in needed)
    assert all((tmp_path / n).read_bytes() == server.state.files[n] for n in needed)
    assert not (tmp_path / "512x512_diffusion_uncond_finetune_008100.pt").exists()  # not needed, not fetched


def test_client_offline_stops_in_seconds_naming_file_directory_and_urls(tmp_path: Path) -> None:
    mirror = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--text_prompts", "a cat", "--steps", "5", "--skip_steps", "0"],
        env=client_env(tmp_path / "models", mirror),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started

    name = "512x512_diffusion_uncond_finetune_008100.pt"
    assert proc.returncode == 1
    assert elapsed < 30  # imports included; the downloads themselves give up in a few seconds
    assert f"cannot get model file {name}" in proc.stderr
    assert f"looked in: {tmp_path / 'models'}" in proc.stderr
    assert f"{mirror}/{name}" in proc.stderr and "save it as" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "disco_diffusion_clip_rn50_out").exists()  # nothing generated, nothing written


def download_offline(models: Path) -> subprocess.CompletedProcess:
    """``client.py --download`` into ``models`` with every mirror unreachable."""
    return subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--download"],
        env=client_env(models, f"http://127.0.0.1:{closed_port()}"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_offline_error_names_every_missing_file_with_sizes_and_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("mine")
    before = sorted(p.name for p in models.iterdir())
    proc = download_offline(models)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"3 model files are missing from {models}, 2.7 GB in all:" in proc.stderr
    for name, size in (
        ("512x512_diffusion_uncond_finetune_008100.pt", "2.2 GB"),
        ("open_clip_rn50_openai.safetensors", "408 MB"),
        ("secondary_model_imagenet_2.pth", "55 MB"),
    ):
        assert f"  {name}  {size}\n" in proc.stderr
    assert sorted(p.name for p in models.iterdir()) == before  # no .lock, no .part, nothing else
    fresh = tmp_path / "fresh"
    proc = download_offline(fresh)
    assert proc.returncode == 1 and not fresh.exists()  # a folder made for the download is gone again


def test_a_download_leaves_no_lock_file(server: Server, tmp_path: Path) -> None:
    file = publish(server, "w.bin", random_bytes(5))
    ensure(file, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin", "w.bin.sha256ok"]
