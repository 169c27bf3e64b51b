"""GoBig: the enlarged canvas's tiles, their blend, the tiles' sampling, and the run from the client."""

import io

import pytest
import torch
from docarray import DocumentArray
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_animation import sampler

import disco.gobig as gobig_module
from disco.animation_plan import plan_run
from disco.clip_model import encode_texts
from disco.gobig import TileBlend, enlarge, gobig, tile_settings, tile_weight
from disco.settings import SettingsError, validate_settings
from disco.tiling import gobig_steps, tile_grid, tile_starts
from disco_service import wire
from disco_service.client import api
from disco_service.outputs import data_uri_bytes
from disco_service.server.quotas import job_pixel_steps
from executors.renderer import Renderer

TILE = dict(width_height=[64, 64], steps=10, skip_steps=0, gobig=True, gobig_overlap=8, gobig_skip_ratio=0.8)
SMALL_CUTS = dict(cut_overview="[1]*1000", cut_innercut="[1]*1000", cutn_batches=1, display_rate=100)
FOUR_TILES = dict(gobig_overlap=0, gobig_skip_ratio=0.9)  # 2 x 2 tiles that abut, each sampling 1 of 10 steps


# ----- the tiles -----


@given(
    tile=st.integers(2, 300),
    scale=st.integers(1, 4),
    data=st.data(),
)
def test_tiles_cover_the_side_from_edge_to_edge_sharing_at_least_the_overlap(tile, scale, data):
    overlap = data.draw(st.integers(0, tile - 1))
    length = tile * scale
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile  # edge to edge, nothing past the canvas
    assert starts == sorted(set(starts))
    shared = [a + tile - b for a, b in zip(starts, starts[1:], strict=False)]
    assert all(s >= overlap for s in shared)  # neighbours share at least the overlap ...
    assert not shared or max(shared) - min(shared) <= 1  # ... spread evenly
    if len(starts) > 2:  # no more tiles than needed: one fewer would share less than the overlap
        assert (length - tile) / (len(starts) - 2) > tile - overlap


def test_a_2x_grid_of_512_with_64_shared_is_3_by_3_and_its_inner_sides_are_marked():
    tiles = tile_grid(512, 512, 2, 64)
    assert len(tiles) == 9 and {(t.width, t.height) for t in tiles} == {(512, 512)}
    assert sorted({t.x for t in tiles}) == [0, 256, 512]
    corner, middle = tiles[0], tiles[4]
    assert (corner.left, corner.top, corner.right, corner.bottom) == (False, False, True, True)
    assert (middle.left, middle.top, middle.right, middle.bottom) == (True, True, True, True)
    with pytest.raises(ValueError, match="overlap 32 must be less than half the smaller side of 64x64"):
        tile_grid(64, 64, 2, 32)


def test_a_tile_weighs_one_inside_and_ramps_only_where_it_has_a_neighbour():
    (corner, *_) = tile_grid(64, 48, 2, 8)
    weight = tile_weight(corner, 8)
    assert weight.shape == (48, 64)
    assert torch.equal(weight[:40, :56], torch.ones(40, 56))  # inside, and at the canvas's edges
    assert torch.allclose(weight[0, 56:], torch.arange(8, 0, -1) / 9)  # falls towards its right neighbour


@pytest.mark.parametrize("overlap", [0, 3, 8])
def test_tiles_of_different_flat_colours_blend_without_a_hard_edge(overlap):
    """Each tile a flat grey of its own: where a tile meets its neighbour the canvas steps by at
    most the difference over (overlap + 1), never by the whole difference."""
    tiles = tile_grid(32, 32, 2, overlap)
    blend = TileBlend(64, 64)
    for i, tile in enumerate(tiles):
        blend.add(tile, torch.full((3, 32, 32), i / len(tiles)), overlap)
    canvas = blend.image()
    assert canvas.shape == (3, 64, 64) and canvas.min() >= 0 and canvas.max() <= 1
    step = max(canvas.diff(dim=1).abs().max(), canvas.diff(dim=2).abs().max()).item()
    largest = (len(tiles) - 1) / len(tiles)  # the biggest difference between two tiles' greys
    if overlap:
        assert step <= largest / (overlap + 1) + 1e-6
    else:
        assert step > 0  # abutting tiles: an edge, which the overlap is for


def test_enlarge_keeps_a_flat_picture_flat_and_scales_the_size():
    flat = torch.full((3, 16, 24), 0.5)
    big = enlarge(flat, 3)
    assert big.shape == (3, 48, 72) and torch.allclose(big, torch.full_like(big, 128 / 255))


# ----- settings, plan, cost -----


def test_settings_are_checked_naming_the_setting():
    cases = [
        (dict(animation_mode="2D"), "gobig", "still images only"),
        (dict(gobig_overlap=32), "gobig_overlap", "below 32"),
        (dict(gobig=False, gobig_from_init=True), "gobig_from_init", "needs gobig true"),
        (dict(gobig_scale=5), "gobig_scale", r"\[2, 4\]"),
        (dict(gobig_skip_ratio=0.99), "gobig_skip_ratio", r"\[0, 0.95\]"),
    ]
    for change, name, words in cases:
        with pytest.raises(SettingsError, match=words) as caught:
            validate_settings(**{**TILE, **change}, tokens=False)
        assert caught.value.parameter == name, (change, caught.value)


def test_gobig_from_init_needs_the_pictures_bytes_at_each_trust_boundary(tmp_path):
    from disco.settings import Limits, check_gobig_start
    from disco_service.server.http_api import settings_from_json

    s = validate_settings(**TILE, gobig_from_init=True, tokens=False)  # a path is not checked here
    check_gobig_start(s, has_init_image=True)
    refusals = []
    for refuse in (
        lambda: check_gobig_start(s, has_init_image=False),
        lambda: wire.check_request_media(s, None),  # the encoder: no bytes in the Document
        lambda: settings_from_json({**TILE, "gobig_from_init": True}, Limits()),  # the job API: no init_image sent
        lambda: api.generate_image(**TILE, gobig_from_init=True, output_dir=str(tmp_path), progress=False),
    ):
        with pytest.raises(SettingsError, match="needs an init_image") as caught:
            refuse()
        refusals.append(caught.value.parameter)
    assert refusals == ["gobig_from_init"] * 4
    assert wire.check_request_media(s, b"bytes of a picture") == 0


def test_the_plan_and_the_quota_count_the_tiles_steps():
    s = validate_settings(**TILE, tokens=False)
    plan = plan_run(s)
    assert plan.first_steps == 10 and plan.gobig_steps == 9 * (10 - 8) and plan.run_steps == 28
    tags = wire.settings_to_tags(s)
    assert job_pixel_steps(tags, 2) == 64 * 64 * 28 * 2
    assert gobig_steps(64, 64, 10, 2, 0.8, 8) == plan.gobig_steps
    with pytest.raises(SettingsError, match="GoBig's tiles' 18") as caught:
        from disco.errors import Limits

        validate_settings(**TILE, limits=Limits(max_pixel_steps=64 * 64 * 20), tokens=False)
    assert caught.value.parameter == "gobig_scale"


# ----- the tiles' sampling -----


def test_each_tile_is_sampled_at_the_tiles_size_from_its_part_of_the_enlargement(tiny_models, monkeypatch):
    seen, real = [], gobig_module.sample_image

    def recording(settings, embeds, weights, models, seed, init_image=None):
        seen.append((settings, seed, init_image))
        return real(settings, embeds, weights, models, seed, init_image=init_image)

    monkeypatch.setattr(gobig_module, "sample_image", recording)
    shapes = []
    hook = tiny_models.unet.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        s = validate_settings(
            **{**TILE, **FOUR_TILES}, **SMALL_CUTS, seed=3, perlin_init=True, use_vertical_symmetry=True, tokens=False
        )
        embeds = encode_texts(tiny_models.clip, ["a lighthouse"])
        image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
        steps = list(gobig(s, embeds, [1.0], tiny_models, 3, image))
    finally:
        hook.remove()
    assert len(steps) == plan_run(s).gobig_steps == 4
    assert set(shapes) == {(1, 3, 64, 64)}  # the UNet never sees more than one tile's pixels
    assert [seed for _, seed, _ in seen] == list(range(4, 8))  # tile i: seed + 1 + i
    first = seen[0][0]
    assert first == tile_settings(s) and first.skip_steps == 9 and not first.perlin_init
    assert not first.use_vertical_symmetry and first.init_scale == 0
    big = enlarge(image, 2)
    assert torch.equal(seen[3][2], big[:, 64:, 64:].mul(2).sub(1).unsqueeze(0))  # the last tile's start
    final = steps[-1].image
    assert final.shape == (3, 128, 128) and all(step.image is None for step in steps[:-1])
    assert not torch.equal(final, big)  # the tiles were diffused again ...
    assert (final - big).abs().mean() < 0.25  # ... starting from the enlarged picture


# ----- the run, from the client's call -----


def test_generate_image_with_gobig_returns_and_writes_the_enlarged_image(tiny_models, tmp_path, monkeypatch):
    executor = sampler(tiny_models, tmp_path)
    renderer = Renderer.__new__(Renderer)
    renderer.board, renderer.store, renderer.swept = executor.board, executor.store, 1e18

    async def in_process(address, docs, progress=True, keep=None, token=None):
        for doc in docs:
            doc.tags.update(wire.restore_numbers(doc.tags))
            doc.embedding = encode_texts(tiny_models.clip, ["a lighthouse"]).numpy()
            doc.tags["prompt_weights"] = [1.0]
            executor._generate(doc)
        renderer.render(DocumentArray(docs), {"accept_unfinished": True})
        return DocumentArray(docs), []

    monkeypatch.setattr(api, "run_jobs", in_process)
    out = tmp_path / "out"
    values = {**TILE, **FOUR_TILES, **SMALL_CUTS, "steps": 4, "skip_steps": 2, "seed": 5, "n_batches": 1}
    (doc,) = api.generate_image(**values, output_dir=str(out), host="grpc://127.0.0.1:9", progress=False)
    assert doc.tags["status"] == "done" and doc.tags["gobig_size"] == [128, 128]
    assert doc.tags["steps_done"] == doc.tags["total"] == 2 + 4 * (4 - 3)
    final = Image.open(io.BytesIO(data_uri_bytes(doc.uri)))
    assert final.size == (128, 128)
    assert Image.open(io.BytesIO(data_uri_bytes(doc.chunks[-1].uri))).size == (64, 64)  # the frames: the first image's
    written = Image.open(out / "reverse_diffusion-5_0.png")
    assert written.size == (128, 128)
    stored = executor.store.entry(doc.id) / "final.png"
    assert Image.open(stored).size == (128, 128)
    assert executor.store.read(doc.id)["gobig_size"] == [128, 128]


def test_gobig_from_init_enlarges_the_given_picture_without_sampling_it_first(tiny_models, tmp_path, monkeypatch):
    from docarray import Document

    from disco.images import png_bytes, to_uint8_hwc

    picture = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    s = validate_settings(
        **{**TILE, **FOUR_TILES}, **SMALL_CUTS, gobig_from_init=True, init_image="given.png", seed=2, tokens=False
    )
    doc = Document(tags=wire.restore_numbers(wire.request_tags(s, 0)), blob=png_bytes(to_uint8_hwc(picture)))
    doc.embedding = encode_texts(tiny_models.clip, ["a lighthouse"]).numpy()
    doc.tags["prompt_weights"] = [1.0]
    starts = []
    monkeypatch.setattr(gobig_module, "enlarge", lambda image, scale: starts.append(image) or enlarge(image, scale))
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and len(doc.chunks) == 0  # no first image was sampled
    assert doc.tags["steps_done"] == doc.tags["total"] == 4 * (10 - 9)
    assert doc.tensor.shape == (128, 128, 3)
    assert torch.allclose(starts[0], picture, atol=1 / 255)  # the init image itself was enlarged


def test_the_progress_bar_counts_the_tiles_and_says_which_tile_it_is_on():
    from docarray import Document

    from disco_service.client.progress import ProgressBars

    s = validate_settings(**TILE, seed=5, tokens=False)
    bars = ProgressBars([Document(id="j0", tags=wire.restore_numbers(wire.request_tags(s, 0)))], file=io.StringIO())
    assert bars.bars["j0"].total == plan_run(s).run_steps == 28
    bars.update([Document(id="j0", tags={"status": "running", "step": 14, "total": 28, "tile": 3, "tiles": 9})])
    shown = str(bars.bars["j0"])
    assert shown.startswith("image 0 (seed 5): GoBig tile 3/9") and "14/28" in shown
    bars.close()
