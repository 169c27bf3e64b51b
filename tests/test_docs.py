"""The documentation holds: the generated reference pages match the code, every relative link of
the README and docs/ leads somewhere, and the quick commands run as written."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
QUICK = re.compile(r"<!-- quick -->\n```bash\n(.*?)```", re.S)


def load_generator():
    """docs/generate.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold brackets that are no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_reference_pages_match_the_code():
    generate = load_generator()
    assert generate.stale_pages() == [], "run: python docs/generate.py"
    assert generate.main(["--check"]) == 0


def test_the_check_names_a_stale_or_missing_page(tmp_path):
    generate = load_generator()
    generate.write_pages(tmp_path)
    assert generate.stale_pages(tmp_path) == []
    routes = tmp_path / "http-routes.md"
    routes.write_text(routes.read_text().replace("`/jobs`", "`/old-jobs`"))
    (tmp_path / "environment.md").unlink()
    assert generate.stale_pages(tmp_path) == ["environment.md", "http-routes.md"]
    assert generate.write_pages(tmp_path) == ["environment.md", "http-routes.md"]
    assert generate.stale_pages(tmp_path) == []


def test_the_reference_tables_carry_every_setting_model_variable_and_route():
    from disco.clip_catalog import CLIP_MODELS
    from disco.models import DIFFUSION_MODELS
    from disco.settings import SETTING_NAMES
    from disco_service.config import VARIABLES

    reference = ROOT / "docs" / "reference"
    parameters = (reference / "parameters.md").read_text()
    assert all(f"| `{name}`" in parameters for name in SETTING_NAMES)
    assert all(f"| `{name}`" in (reference / "diffusion-models.md").read_text() for name in DIFFUSION_MODELS)
    assert all(f"| `{name}`" in (reference / "clip-models.md").read_text() for name in CLIP_MODELS)
    assert all(f"| `{v.name}`" in (reference / "environment.md").read_text() for v in VARIABLES)
    routes = (reference / "http-routes.md").read_text()
    for method, path in [("POST", "/jobs"), ("GET", "/jobs/{job_id}"), ("DELETE", "/jobs/{job_id}"),
                         ("GET", "/results/{doc_id}"), ("POST", "/predict/{module}"), ("GET", "/jobs/events"),
                         ("POST", "/admin/pause"), ("GET", "/jobs/{job_id}/files.zip")]:  # fmt: skip
        assert f"| {method} | `{path}` |" in routes


def test_the_configuration_table_names_every_variable_it_reads():
    from disco_service.config import VARIABLES

    source = (ROOT / "disco_service" / "config.py").read_text()
    code = source.split('"""', 2)[2]  # past the module docstring
    assert {v.name for v in VARIABLES} == set(re.findall(r'"(DISCO_\w+)"', code))
    assert all(v.default and v.meaning for v in VARIABLES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page):
    assert page.is_file()
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and (not file.is_file() or anchor not in anchors(file))):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A heading\n\n[ok](#a-heading) [no](#nothing) [gone](missing.md) `[code](x.md)`\n")
    assert relative_links(page) == ["#a-heading", "#nothing", "missing.md"]
    assert anchors(page) == {"a-heading"}
    assert slug("PaddleHub's `hub serving`") == "paddlehubs-hub-serving"


def quick_commands() -> list[str]:
    """Every line of the ``bash`` blocks marked ``<!-- quick -->`` in the README and docs/."""
    return [line for page in PAGES for block in QUICK.findall(page.read_text()) for line in block.splitlines()
            if line.strip()]  # fmt: skip


def test_the_docs_mark_the_quick_commands():
    commands = quick_commands()
    assert ".venv/bin/python docs/generate.py --check" in commands
    assert ".venv/bin/python client.py --help" in commands
    assert all(c.startswith(".venv/bin/python ") for c in commands), commands


@pytest.mark.parametrize("command", quick_commands())
def test_a_quick_command_runs_as_written(command):
    argv = [sys.executable, *shlex.split(command)[1:]]  # the venv's python, whichever checkout it is in
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_readme_is_a_front_door_to_every_page():
    readme = (ROOT / "README.md").read_text()
    assert 150 <= len(readme.splitlines()) <= 250
    assert "python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt -e ." in readme
    assert "\n.venv/bin/python -m pytest -q\n" in readme
    assert '\n.venv/bin/python -m pytest -q -m "not slow"\n' in readme
    assert "(docs/ui.png)" in readme and (ROOT / "docs" / "ui.png").is_file()
    linked = {(ROOT / link.partition("#")[0]).resolve() for link in relative_links(ROOT / "README.md")}
    pages = {*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "reference").glob("*.md")}
    assert not {p.relative_to(ROOT).as_posix() for p in pages if p.resolve() not in linked}
