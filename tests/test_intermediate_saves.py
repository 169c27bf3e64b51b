"""``intermediate_saves``: which steps are saved (the notebook's formula for a count, the steps of a
list), the sampler's reports of them, and the files the client writes in ``output_dir/partials``."""

import numpy as np
import pytest
from conftest import TINY
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_animation import rendered, request, sampler

from disco.clip_model import encode_texts
from disco.partials import intermediate_steps, partial_suffix
from disco.settings import SettingsError, validate_settings
from disco_service import wire
from disco_service.client.api import make_documents
from disco_service.outputs import save_outputs


def test_a_count_saves_at_the_notebooks_steps_per_checkpoint():
    # the notebook: steps_per_checkpoint = (steps - skip_steps - 1) // (N + 1); saved where j % it == 0 and j > 0
    assert sorted(intermediate_steps(2, 250, 10)) == [79, 158, 237]  # 239 // 3 = 79
    assert [partial_suffix(2, j, 250, 10) for j in (79, 158, 237)] == ["34%", "67%", "100%"]  # ceil(j / 239 * 100)
    assert sorted(intermediate_steps(3, 100, 0)) == [24, 48, 72, 96]  # 99 // 4
    assert intermediate_steps(0, 250, 10) == frozenset()  # 0 saves none
    assert sorted(intermediate_steps(50, 10, 0)) == list(range(1, 10))  # at least every step
    assert partial_suffix(3, 5, 100, 0) == "06%"  # two digits, as the notebook's {percent:02}


def test_a_list_saves_at_its_steps_the_image_reaches():
    assert sorted(intermediate_steps([5, 9, 34, 300], 250, 10)) == [5, 9, 34]  # 240 steps run: 300 is never reached
    assert [partial_suffix([5, 9], j, 250, 10) for j in (5, 9)] == ["005", "009"]


@given(count=st.integers(1, 1000), steps=st.integers(2, 1000), skip=st.integers(0, 999))
def test_a_counts_saves_are_evenly_spaced_inside_the_run(count, steps, skip):
    skip = min(skip, steps - 1)
    saved = sorted(intermediate_steps(count, steps, skip))
    run = steps - skip
    every = max(1, (run - 1) // (count + 1))
    assert saved == [j for j in range(1, run) if j % every == 0]
    assert all(0 < j < run for j in saved) and len(saved) >= min(count, run - 1)


def test_intermediate_saves_is_read_as_a_count_or_a_list_of_steps():
    read = [validate_settings(intermediate_saves=v, tokens=False).intermediate_saves for v in (2, "2", 3.0)]
    assert read == [2, 2, 3]
    lists = ([9, 5, 5], "[5, 9]", "5, 9", "[5 9]")
    assert [validate_settings(intermediate_saves=v, tokens=False).intermediate_saves for v in lists] == [[5, 9]] * 4
    assert validate_settings(intermediate_saves=0, tokens=False).intermediate_saves == 0  # the notebook's default
    for bad in (-1, "x", "[5, x]", [0], True, 2.5, "", [5.5]):
        with pytest.raises(SettingsError) as refused:
            validate_settings(intermediate_saves=bad, tokens=False)
        assert refused.value.parameter == "intermediate_saves"
    # the wire gives whole numbers back as numbers (protobuf's Struct sends them as floats)
    assert wire.restore_numbers({"intermediate_saves": [5.0, 9.0]})["intermediate_saves"] == [5, 9]
    assert wire.restore_numbers({"intermediate_saves": 2.0})["intermediate_saves"] == 2


def test_an_images_saved_steps_go_to_the_partials_folder(tiny_models, tmp_path):
    s = validate_settings(
        **{**TINY, "steps": 6, "skip_steps": 0, "display_rate": 2, "seed": 3, "n_batches": 1},
        intermediate_saves=1, output_dir=str(tmp_path / "out"), tokens=False,
    )  # fmt: skip
    (doc,) = make_documents(s, None, 3600)
    doc.tags.update(wire.restore_numbers(doc.tags))
    doc.embedding = encode_texts(tiny_models.clip, ["a lighthouse"]).numpy()
    doc.tags["prompt_weights"] = [1.0]
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done"
    # one save: every (6 - 0 - 1) // 2 = 2nd step, j = 2 and 4; ceil(2 / 5 * 100) = 40%, ceil(4 / 5 * 100) = 80%
    assert [(m.tags["partial"], m.tags["step"]) for m in doc.matches] == [("40%", 3), ("80%", 5)]
    # the display frames are as before (steps 1, 3, 5 and the last): a saved step is not one of them
    assert [int(c.tags["step"]) for c in doc.chunks] == [1, 3, 5, 6]
    rendered(doc)
    files = save_outputs([doc], s)
    partials = sorted((tmp_path / "out" / "partials").iterdir())
    assert [p.name for p in partials] == ["reverse_diffusion-3_0-40%.png", "reverse_diffusion-3_0-80%.png"]
    assert set(partials) <= set(files)
    pictures = [np.asarray(Image.open(p)) for p in partials]
    assert pictures[0].shape == (64, 64, 3) and not np.array_equal(pictures[0], pictures[1])


def test_an_animations_saved_steps_are_named_by_frame(tiny_models, tmp_path):
    # frame 0 runs 2 steps (j 0 and 1), frame 1 skips 50%: 1 step (j 0); [1] saves frame 0's second step only
    run, doc = request(tiny_models, tmp_path, animation_mode="2D", max_frames=2, intermediate_saves=[1])
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done"
    assert [(m.tags["frame"], m.tags["partial"]) for m in doc.matches] == [(0, "001")]
    rendered(doc)
    files = run.save(doc)
    (saved,) = (tmp_path / "partials").iterdir()
    assert saved.name == f"{run.prefix}-frame0000-001.png" and str(saved) in doc.tags["files"]
    assert len(files) == 3  # two frames and the MP4, as before
