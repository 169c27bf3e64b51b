"""The seams: one reader of the environment, one wire protocol, one source of every type, and the
faults they used to let through (bad prompts caught late, numbers refused by the CLI, a missing
settings file, an output_dir that is a file, the download list that needed torch, a raw gRPC
dump when the Flow is unreachable)."""

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

import disco.settings
from disco.settings import SETTING_NAMES, Settings, kind, validate_settings
from disco_service import wire
from disco_service.client import api, cli
from disco_service.client.local_flow import free_port

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / "client.py", ROOT / "serve.py", *ROOT.glob("disco/*.py"), *ROOT.glob("disco_service/*.py")]
PRODUCT += [*ROOT.glob("executors/*.py"), *ROOT.glob("gateway/*.py"), ROOT / "deploy" / "export.py"]


# ----- the layout -----


def test_no_sys_path_edits_and_no_e402_in_product_code():
    for path in PRODUCT:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert "E402" not in text, path


def test_only_the_config_module_reads_disco_variables():
    # messages and help texts may name a variable; reading one takes os.environ or os.getenv
    for path in PRODUCT:
        if path.relative_to(ROOT) != Path("disco_service/config.py"):
            text = path.read_text().replace(" ", "")
            for reader in ('environ.get("DISCO_', 'getenv("DISCO_', 'environ["DISCO_', "environ.get('DISCO_"):
                assert reader not in text, (path, reader)


def test_the_engine_imports_nothing_of_the_service_jina_or_docarray():
    for path in ROOT.glob("disco/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("disco_service", "jina", "docarray", "executors"), (path, name)
            assert not (isinstance(node, ast.Attribute) and node.attr == "environ"), path


# ----- one source for every default and type -----


def test_generate_image_signature_is_read_from_the_settings():
    import inspect

    from client import generate_image

    params = inspect.signature(generate_image).parameters
    defaults = Settings()
    for name in SETTING_NAMES:
        assert params[name].default == getattr(defaults, name), name
    seed_api = list(params)[: list(params).index("output_dir") + 1]
    assert seed_api == list(disco.settings.SEED_API_NAMES)
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("host", "progress", "verbose", "eta"))


def test_every_number_the_api_takes_parses_on_the_command_line():
    parser = cli.build_parser()
    args = vars(
        parser.parse_args(
            ["--tv_scale", "0.5", "--clip_guidance_scale", "7500.5", "--init_scale", "1e3", "--cut_ic_pow", "1e-3"]
            + ["--steps", "1e2", "--seed", "42", "--width_height", "128", "64", "--eta", "0"]
        )
    )
    assert args["tv_scale"] == 0.5 and args["clip_guidance_scale"] == 7500.5 and args["init_scale"] == 1000.0
    assert args["cut_ic_pow"] == 0.001 and args["steps"] == 100 and args["seed"] == 42
    assert args["width_height"] == [128, 64]
    s = validate_settings({k: v for k, v in args.items() if k in SETTING_NAMES})
    assert (s.tv_scale, s.clip_guidance_scale, s.cut_ic_pow) == (0.5, 7500.5, 0.001)
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "2.5"])  # a whole number is required


def test_the_wire_restores_each_number_by_its_field_type():
    s = validate_settings(**TINY, seed=7)
    tags = wire.request_tags(s, 1, 30.0)
    grpc = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in tags.items()}
    grpc["width_height"] = [64.0, 64.0]
    http = {**tags, "skip_steps": True, "tv_scale": False}  # HTTP's JSON 1/0 arrive as true/false
    back = wire.settings_from_tags(grpc)
    assert back == s.__class__(**{**s.to_dict(), "seed": 8}) and isinstance(back.steps, int)
    assert isinstance(back.width_height[0], int) and isinstance(back.clip_guidance_scale, float)
    restored = wire.restore_numbers(http)
    assert restored["skip_steps"] == 1 and restored["tv_scale"] == 0 and restored["use_gpu"] is False
    assert wire.restore_numbers(grpc)["batch_index"] == 1 and isinstance(wire.restore_numbers(grpc)["run_seed"], int)
    assert {kind(n) for n in SETTING_NAMES} <= set(disco.settings.KINDS)


# ----- the defects -----


@pytest.fixture
def no_downloads(monkeypatch):
    """Any model download (or Flow start) fails the test: bad input must stop before them."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model download or a Flow start was attempted")

    monkeypatch.setattr(api, "download_models", refuse)
    monkeypatch.setattr(api, "local_flow", refuse)


@pytest.mark.parametrize(
    "prompts,message",
    [
        (["a lighthouse:1", "the sea:-1"], "error: text_prompts: prompt weights must not sum to 0"),
        ([" ".join(["word"] * 90)], "error: text_prompts: prompt is 92 CLIP tokens, the limit is 77"),
    ],
)
def test_bad_prompts_stop_the_cli_with_exit_2_before_any_model(prompts, message, no_downloads, capsys, tmp_path):
    code = cli.main(["--text_prompts", *prompts, "--output_dir", str(tmp_path / "out"), "--no_progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


def test_a_missing_settings_file_is_a_clean_error(no_downloads, capsys, tmp_path):
    assert cli.main(["--settings", str(tmp_path / "missing.yml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --settings {tmp_path / 'missing.yml'}: cannot read it") and "Traceback" not in err
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    assert cli.main(["--settings", str(tmp_path / "list.yml")]) == 2
    assert "not a YAML/JSON settings file (it holds a list, not setting names" in capsys.readouterr().err


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(no_downloads, capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert cli.main(["--output_dir", str(target), "--no_progress"]) == 2
    assert capsys.readouterr().err.startswith(f"error: output_dir: '{target}' exists and is not a directory")
    assert cli.main(["--output_dir", str(target / "below"), "--no_progress"]) == 2
    assert "which is a file" in capsys.readouterr().err


def test_images_are_never_lost_to_a_saving_error(tmp_path):
    from docarray import Document, DocumentArray
    from test_names import png_uri

    s = validate_settings(**TINY, seed=3, n_batches=1, output_dir=str(tmp_path / "out"))
    doc = Document(uri=png_uri((10, 20, 30)), tags={**wire.request_tags(s, 0), "status": "done"})
    doc.chunks.append(Document(uri=png_uri((10, 20, 30)), tags={"step": 3, "cur_t": -1}))
    (tmp_path / "out").write_text("the folder became a file after the check")
    problems = api._save(DocumentArray([doc]), s)
    assert len(problems) == 1 and "saved in" in problems[0]
    saved = Path(doc.tags["files"][0])
    assert saved.is_file() and saved.parent.name.startswith("disco-unsaved-")


def test_listing_the_downloads_needs_no_torch(model_dir):
    code = (
        "import sys; from disco_service.client.cli import main; "
        "rc = main(['--download', '--no_progress', '--text_prompts', 'a lighthouse']); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)"
    )
    env = {**os.environ, "DISCO_MODEL_DIR": str(model_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].split() == ["NO-TORCH", "0"], done.stdout
    assert any(line.endswith("512x512_diffusion_uncond_finetune_008100.pt") for line in lines)


def test_a_missing_init_image_is_refused_before_open_clip_is_imported(tmp_path):
    """The client checks its files before the prompts' token counts: open_clip's import (seconds)
    waits for a run that can start."""
    code = (
        "import sys; from disco_service.client.cli import main; "
        f"rc = main(['--init_image', {str(tmp_path / 'missing.png')!r}, '--no_progress']); "
        "print('OPEN_CLIP' if 'open_clip' in sys.modules else 'NO-OPEN_CLIP', rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1].split() == ["NO-OPEN_CLIP", "2"], done.stdout + done.stderr
    assert done.stderr.startswith("error: init_image: no such file"), done.stderr


def test_an_unreachable_flow_is_one_clear_line_and_ctrl_c_ends_the_wait(tmp_path):
    """Nothing listens: the client says so at once and waits for a Flow that may be restarting;
    Ctrl-C ends the wait with one error line (it was a traceback when the cancel could not be sent)."""
    port = free_port()
    command = [sys.executable, str(ROOT / "client.py"), "--host", f"grpc://127.0.0.1:{port}", "--no_progress"]
    command += ["--width_height", "64", "64", "--steps", "2", "--skip_steps", "0", "--n_batches", "1"]
    command += ["--output_dir", str(tmp_path / "out")]
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached = "the Flow cannot be reached (gRPC UNAVAILABLE): is it running, and is the address right?"
    try:
        first = client.stderr.readline()
        assert first.strip() == f"disco: {reached}: trying again for up to 3 minutes (Ctrl-C stops)"
        client.send_signal(signal.SIGINT)
        stdout, stderr = client.communicate(timeout=60)
    finally:
        client.kill()
    assert client.returncode == 1 and stdout == "", stdout  # stdout is for the JSON summary: no log blocks
    assert [line for line in stderr.splitlines() if line.strip()] == [f"error: {reached}"], stderr


def test_randomize_class_changes_nothing_for_these_unconditional_models(tiny_models):
    import torch

    from disco.sampler import sample_image

    embeds = torch.nn.functional.normalize(torch.randn(1, 1024, generator=torch.Generator().manual_seed(0)), dim=-1)
    finals = []
    for randomize in (True, False):
        s = validate_settings(**TINY, seed=5, randomize_class=randomize)
        final = None
        for report in sample_image(s, embeds, [1.0], tiny_models, seed=5):
            final = report.image if report.image is not None else final
        finals.append(final)
    assert torch.equal(finals[0], finals[1])
    assert "changes nothing" in disco.settings.describe("randomize_class")[0]


# ----- validation: once per trust boundary -----


def test_each_image_is_validated_once_by_the_server_and_once_by_the_client(model_dir, tmp_path, monkeypatch):
    """The executors in one process, as the Flow chains them: the encoder validates, the sampler
    and the renderer decode; the client validates once per call."""
    from docarray import DocumentArray

    from executors.diffusion_sampler import DiffusionSampler
    from executors.prompt_encoder import PromptEncoder
    from executors.renderer import Renderer

    calls = []
    real = disco.settings.validate_settings

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    for module in (disco.settings, wire, api, cli):
        if hasattr(module, "validate_settings"):
            monkeypatch.setattr(module, "validate_settings", counting)
    board = str(tmp_path / "jobs.sqlite3")
    encoder = PromptEncoder(model_dir=str(model_dir), use_gpu="0", state_store=board)
    sampler = DiffusionSampler(model_dir=str(model_dir), use_gpu="0", preload="none", state_store=board)
    renderer = Renderer(state_store=board)

    async def no_flow(address, docs, show_progress, on_finished_frame=None, token=None):
        sent.extend(docs)
        return DocumentArray(), []

    sent = []
    monkeypatch.setattr(api, "run_jobs", no_flow)
    settings = {**TINY, "seed": 11, "n_batches": 1, "steps": 2, "display_rate": 1, "output_dir": str(tmp_path / "o")}
    api.generate_image(**settings, host="grpc://127.0.0.1:1", progress=False)
    assert len(calls) == 1  # the client's check, once per call
    docs = DocumentArray(sent)
    encoder.encode(docs)
    assert len(calls) == 2  # the server's first executor, once per image
    tags = set(docs[0].tags)
    read_by_the_sampler = {wire.PROMPT_WEIGHTS_TAG, wire.EMBEDDING_WIDTHS_TAG, "prompt_sets"}
    assert tags <= {*SETTING_NAMES, *wire.REQUEST_TAGS, *read_by_the_sampler}, tags  # nothing nobody reads
    sampler.generate(DocumentArray(docs))
    renderer.render(DocumentArray(docs))
    assert len(calls) == 2  # later hops decode, they do not validate again
    assert docs[0].tags["status"] == wire.JobStatus.DONE and docs[0].uri.startswith("data:image/png")


def test_the_schema_groups_the_animation_settings_as_motion():
    from disco.settings import settings_schema

    groups = {row["name"]: row["group"] for row in settings_schema()}
    assert groups["animation_mode"] == groups["video_init_path"] == groups["zoom"] == "motion"
    assert groups["steps"] is None and groups["init_image"] is None


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--steps", "1e400"], "error: steps: inf is not a finite number"),
        (["--seed", "nan"], "error: seed: nan is not a finite number"),
        (["--eta=-1e400"], "error: eta: -inf is not a finite number"),
        (["--width_height", "64", "inf"], "error: width_height: inf is not a finite number"),
        (["--transformation_percent", "0.5", "1e400"], "error: transformation_percent: inf is not a finite number"),
        (["--clip_guidance_scale", "[1e400]*1000"], "error: clip_guidance_scale: '1e400' in '[1e400]*1000' is not"),
        (["--zoom", "0: (1), 4: (1e400)"], "error: zoom: a number in '1e400' is not a finite number"),
        (["--text_prompts", "a lighthouse:1e400"], "error: text_prompts: the prompt weight '1e400' in"),
    ],
)
def test_numbers_that_are_not_finite_stop_the_cli_by_name(flags, message, no_downloads, capsys, tmp_path):
    assert cli.main([*flags, "--output_dir", str(tmp_path / "out"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err, err
