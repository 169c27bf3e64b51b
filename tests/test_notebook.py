"""The seed's snippet in a real Jupyter kernel, where an event loop is already running."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import client as module  # in place of hub.Module(name="disco_diffusion_clip_rn50")
SMALL = dict(width_height=[64, 64], steps=4, skip_steps=1, display_rate=2, n_batches=1, use_gpu=False,
             cutn_batches=1, cut_overview="[1]*1000", cut_innercut="[1]*1000", progress=False)
"""

# The seed's example as written, but for the model and the small sizes (**SMALL).
SNIPPET = """
text_prompts = ["A beautiful painting of a singular lighthouse, shining its light across a tumultuous sea of blood by greg rutkowski and thomas kinkade, Trending on artstation."]
da = module.generate_image(text_prompts=text_prompts, output_dir='./disco_diffusion_clip_rn50_out/', **SMALL)
da[0].save_uri_to_file('disco_diffusion_clip_rn50_out-result.png')
da[0].chunks.plot_image_sprites(skip_empty=True, show_index=True, keep_aspect_ratio=True)
da[0].chunks.save_gif('disco_diffusion_clip_rn50_out-result.gif', show_index=True, inline_display=True, size_ratio=0.5)
"""  # noqa: E501


def test_the_seed_snippet_runs_in_a_jupyter_kernel(flow_env, tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(SNIPPET)])
    where = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where).execute()
    outputs = notebook.cells[1].outputs
    assert any(any(kind.startswith("image/") for kind in out.get("data", {})) for out in outputs), outputs
    assert (tmp_path / "disco_diffusion_clip_rn50_out-result.png").stat().st_size > 0
    assert (tmp_path / "disco_diffusion_clip_rn50_out-result.gif").stat().st_size > 0
    assert any((tmp_path / "disco_diffusion_clip_rn50_out").glob("reverse_diffusion-*_0.png"))
