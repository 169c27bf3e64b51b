"""Symmetry and scheduled scales: the mirror and when it happens, per-step scales in the guidance,
their validation, the command line and the PNG settings that remake an image."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY
from PIL import Image

from disco.clip_model import encode_texts
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion, transformation_indices
from disco.guidance import ClipGuide, Guidance
from disco.sampler import Models, sample_image
from disco.settings import SettingsError, kind, settings_schema, validate_settings
from disco.symmetry import mirror_halves
from disco_service import wire
from disco_service.client import cli
from disco_service.client.cpu_estimate import mean_cutouts
from disco_service.outputs import embed_settings, image_settings

SCALES = ("clip_guidance_scale", "tv_scale", "range_scale", "sat_scale", "init_scale", "clamp_max")


def symmetric(x: torch.Tensor, horizontal: bool) -> bool:
    return torch.equal(x, x.flip(-1 if horizontal else -2))


# ----- symmetry -----


def test_mirror_halves_copies_the_left_half_flipped_onto_the_right_and_the_top_onto_the_bottom():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)
    h = mirror_halves(x, horizontal=True, vertical=False)
    assert torch.equal(h[..., :3], x[..., :3]) and torch.equal(h[..., 3:], x[..., :3].flip(-1))
    v = mirror_halves(x, horizontal=False, vertical=True)
    assert torch.equal(v[..., :2, :], x[..., :2, :]) and torch.equal(v[..., 2:, :], x[..., :2, :].flip(-2))
    both = mirror_halves(x, horizontal=True, vertical=True)
    assert symmetric(both, True) and symmetric(both, False) and torch.equal(both[..., :2, :3], x[..., :2, :3])
    assert torch.equal(mirror_halves(x, False, False), x)
    odd = torch.arange(5.0).view(1, 1, 1, 5)  # the middle column stays
    assert mirror_halves(odd, True, False).flatten().tolist() == [0, 1, 2, 1, 0]


def test_transformation_indices_are_the_notebooks():
    # int(len(indices) * (1 - p)) over the sampled steps, whose indices count down from sampled - 1
    assert transformation_indices(240, [0.09]) == {218}  # after 21 of 240 steps
    assert transformation_indices(3, [0.5]) == {1}
    assert transformation_indices(10, [0.2, 0.5, 0.55]) == {8, 5, 4}
    assert transformation_indices(10, [0.5, 0.51]) == {5, 4}
    assert transformation_indices(3, [0.99]) == {0}  # the last step starts from the mirrored sample
    assert transformation_indices(3, [1e-17]) == set()  # rounds to the first step's index + 1: never


class Recorder(torch.nn.Module):
    """A model that writes down every sample it is called with (the loop's model calls only)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x, t):
        self.seen.append(x.detach().clone())
        return self.model(x, t)


@pytest.mark.parametrize("mode", ["ddim", "plms"])
@pytest.mark.parametrize("horizontal", [True, False])
def test_the_sample_is_mirrored_exactly_at_the_transformation_step(tiny_models, mode, horizontal):
    """4 steps, 1 skipped: 3 sampled, indices 2, 1, 0; transformation_percent 0.5 is index 1, the
    second step. The model sees a mirror-symmetric sample there and an asymmetric one just before."""
    unet = Recorder(tiny_models.unet)
    models = Models(unet=unet, clip=tiny_models.clip, secondary=tiny_models.secondary)
    s = validate_settings(
        **{**TINY, "use_horizontal_symmetry": horizontal, "use_vertical_symmetry": not horizontal},
        transformation_percent=[0.5], diffusion_sampling_mode=mode, clip_guidance_scale=0,  # CLIP is slow here
    )  # fmt: skip
    reports = list(sample_image(s, encode_texts(tiny_models.clip, ["a red apple"]), [1.0], models, seed=3))
    # one model call per step; PLMS's first step calls it twice (its improved-Euler start)
    calls = [0, 1, 2] if mode == "ddim" else [0, 2, 3]
    assert len(unet.seen) == calls[-1] + 1 and len(reports) == 3
    before, at, after = (unet.seen[c] for c in calls)
    assert symmetric(at, horizontal)
    assert not symmetric(before, horizontal) and not symmetric(after, horizontal)
    assert not symmetric(at, not horizontal)  # only the asked-for axis


@pytest.mark.parametrize("mode", ["ddim", "plms"])
def test_the_loops_mirror_the_sample_the_previous_step_ended_with(mode):
    d = GaussianDiffusion(10)
    seen = []

    def model(x, t):
        seen.append(x.clone())
        eps = 0.5 * x + 0.001 * t.view(-1, 1, 1, 1)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def flip(v):
        return mirror_halves(v, True, False)

    def loop(**transformation):
        if mode == "ddim":
            noise = torch.Generator().manual_seed(1)
            return d.ddim_loop(model, x, eta=0.8, generator=noise, skip_steps=2, **transformation)
        return d.plms_loop(model, x, skip_steps=2, **transformation)

    plain = [s.sample for s in loop()]
    seen.clear()
    steps = list(loop(transformation_fn=flip, transformation_percent=[0.25]))
    index = transformation_indices(8, [0.25]).pop()  # 6: the second of 8 steps (indices 7..0)
    j = 7 - index
    call = j + (1 if mode == "plms" else 0)  # PLMS's first step calls the model twice
    assert torch.equal(seen[call], flip(steps[j - 1].sample)) and symmetric(seen[call], True)
    assert all(torch.equal(a.sample, b) for a, b in zip(steps[:j], plain[:j], strict=True))  # the same until then
    assert not torch.equal(steps[j].sample, plain[j])


def test_symmetry_off_leaves_the_run_as_it_was(tiny_models):
    embeds = encode_texts(tiny_models.clip, ["a red apple"])
    plain = validate_settings(**TINY, clip_guidance_scale=0)
    percent_only = validate_settings(**TINY, clip_guidance_scale=0, transformation_percent=[0.5])
    a = list(sample_image(plain, embeds, [1.0], tiny_models, seed=2))[-1].image
    b = list(sample_image(percent_only, embeds, [1.0], tiny_models, seed=2))[-1].image
    assert torch.equal(a, b)


# ----- scheduled scales in the guidance -----


def guidance(models, diffusion, **settings):
    s = validate_settings(**{**TINY, "clip_guidance_scale": 0, "range_scale": 0, "clamp_grad": False, **settings})
    g = torch.Generator().manual_seed(0)
    embeds = encode_texts(models.clip, ["a red apple"])
    return Guidance(
        s,
        diffusion,
        [ClipGuide(models.clip, embeds, torch.ones(1))],
        CutoutRandomness(g, g),
        models.secondary,
        models.unet,
    )


TWO_VALUES = {
    "clip_guidance_scale": (5000, 2000),
    "tv_scale": (300, 40),
    "range_scale": (150, 1e4),
    "sat_scale": (1e3, 10),
    "cutn_batches": (1, 2),
    "clamp_max": (0.05, 0.001),
}


def scale_settings(name, value):
    """Settings under which ``name`` changes the gradient (CLIP only where it is needed: it is slow here)."""
    base = {"cutn_batches": {"clip_guidance_scale": 1000}, "clamp_max": {"clamp_grad": True, "range_scale": 1e6}}
    return {**base.get(name, {}), name: value}


@pytest.mark.parametrize("name", list(TWO_VALUES))
def test_a_constant_schedule_gives_the_numbers_gradient_bit_for_bit(tiny_models, name):
    diffusion = GaussianDiffusion(10)
    x = 1.5 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([diffusion.scaled_timestep(5)])
    value = TWO_VALUES[name][0]
    number = guidance(tiny_models, diffusion, **scale_settings(name, value))(x, t, 5)
    schedule = guidance(tiny_models, diffusion, **scale_settings(name, f"[{value}]*1000"))(x, t, 5)
    assert number.abs().sum() > 0 and torch.equal(number, schedule)


@pytest.mark.parametrize("name", list(TWO_VALUES))
def test_a_two_valued_schedule_switches_at_virtual_step_500(tiny_models, name):
    """10 steps: index k is t = 100 k, read at 1000 - (t + 1): index 5 at 499 (the first value),
    index 4 at 599 (the second). Each gives the gradient of its value given as a number."""
    diffusion = GaussianDiffusion(10)
    x = 1.5 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    first, second = TWO_VALUES[name]
    for index, value in ((5, first), (4, second)):
        t = torch.tensor([diffusion.scaled_timestep(index)])
        scheduled = guidance(tiny_models, diffusion, **scale_settings(name, f"[{first}]*500+[{second}]*500"))
        want = guidance(tiny_models, diffusion, **scale_settings(name, value))(x, t, index)
        other = guidance(tiny_models, diffusion, **scale_settings(name, second if value == first else first))
        got = scheduled(x, t, index)
        assert torch.equal(got, want), f"{name} at index {index}"
        if index == 5:
            assert not torch.equal(got, other(x, t, index)), f"{name}: both values give the same gradient"


def test_a_scheduled_init_scale_uses_the_init_loss_only_where_it_is_on(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    g = guidance(tiny_models, diffusion, init_scale="[0]*500+[1000]*500")
    g.init = torch.zeros(1, 3, 64, 64)
    g.init_loss = lambda a, b: (a - b).square().mean([1, 2, 3])
    assert torch.count_nonzero(g(x, torch.tensor([diffusion.scaled_timestep(5)]), 5)) == 0  # virtual step 499: 0
    assert torch.count_nonzero(g(x, torch.tensor([diffusion.scaled_timestep(4)]), 4)) > 0  # 599: 1000


def test_scheduled_cutn_batches_runs_that_many_batches_at_each_step(tiny_models):
    diffusion = GaussianDiffusion(10)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    g = guidance(tiny_models, diffusion, clip_guidance_scale=1000, cutn_batches="[3]*500+[1]*500")
    g(x, torch.tensor([diffusion.scaled_timestep(5)]), 5)
    assert len(g.losses) == 3  # one CLIP loss per cutout batch
    g(x, torch.tensor([diffusion.scaled_timestep(4)]), 4)
    assert len(g.losses) == 4


def test_a_run_with_constant_schedules_is_the_run_with_numbers_bit_for_bit(tiny_models):
    embeds = encode_texts(tiny_models.clip, ["a red apple"])
    numbers = dict(clip_guidance_scale=3000, tv_scale=10, range_scale=150, sat_scale=5, clamp_max=0.1, cutn_batches=2)
    schedules = {k: f"[{v}]*1000" for k, v in numbers.items()}
    a = list(sample_image(validate_settings(**{**TINY, **numbers}), embeds, [1.0], tiny_models, seed=4))
    b = list(sample_image(validate_settings(**{**TINY, **schedules}), embeds, [1.0], tiny_models, seed=4))
    assert torch.equal(a[-1].image, b[-1].image)


# ----- validation, the wire, the command line, the page's schema, the PNG settings -----


@pytest.mark.parametrize(
    "name,value,fragment",
    [
        ("clip_guidance_scale", "[5000]*500+[2000]*499", "exactly 1000"),
        ("clip_guidance_scale", "lots", "a number or a schedule"),
        ("clip_guidance_scale", [5000, 2000], "a number or a schedule"),
        ("tv_scale", "[1]*500+[inf]*500", "finite"),
        ("cutn_batches", "[4]*500+[65]*500", "[1, 64], got 65"),
        ("cutn_batches", "[4]*500+[0]*500", "[1, 64], got 0"),
        ("cutn_batches", "[2.5]*1000", "integer, got 2.5"),
        ("cutn_batches", 2.5, "integer"),
        ("clamp_max", "[0.05]*500+[0]*500", "> 0 at every step when clamp_grad is on"),
        ("clamp_max", "[0.05]*500+[-1]*500", "got -1"),
        ("init_scale", "eval('1')", "a number or a schedule"),
        ("transformation_percent", [0.5, 1], "between 0 and 1"),
        ("transformation_percent", [0], "between 0 and 1"),
        ("transformation_percent", [], "1 to 100 fractions"),
        ("transformation_percent", ["half"], "must be a number"),
        ("use_vertical_symmetry", "yes", "true or false"),
    ],
)
def test_bad_schedules_and_symmetry_settings_are_refused_naming_the_setting(name, value, fragment):
    with pytest.raises(SettingsError) as err:
        validate_settings(**{name: value}, tokens=False)
    assert err.value.parameter == name and str(err.value).startswith(f"{name}: ")
    assert fragment in str(err.value)


def test_numbers_stay_numbers_and_schedules_stay_as_written():
    s = validate_settings(tokens=False, clip_guidance_scale="[5000]*500+[2000]*500", tv_scale=1, cutn_batches=4.0)
    assert s.clip_guidance_scale == "[5000]*500+[2000]*500"
    assert s.tv_scale == 1.0 and isinstance(s.tv_scale, float)
    assert s.cutn_batches == 4 and isinstance(s.cutn_batches, int)
    assert validate_settings(tokens=False, clamp_grad=False, clamp_max="[0]*1000").clamp_max == "[0]*1000"
    assert validate_settings(tokens=False, transformation_percent=0.2).transformation_percent == [0.2]


def test_kinds_and_the_pages_schema():
    assert [kind(n) for n in SCALES] == ["number_or_schedule"] * 6
    assert kind("cutn_batches") == "int_or_schedule" and kind("transformation_percent") == "numbers"
    rows = {row["name"]: row for row in settings_schema()}
    assert rows["use_horizontal_symmetry"]["kind"] == "bool" and rows["use_horizontal_symmetry"]["default"] is False
    assert rows["transformation_percent"]["default"] == [0.09]
    assert "[5000]*500+[2000]*500" in rows["tv_scale"]["allowed"]
    assert "1 to 64" in rows["cutn_batches"]["allowed"] and rows["cutn_batches"]["high"] == 64


def test_the_wire_gives_numbers_back_their_types_and_leaves_schedules_alone():
    tags = {"cutn_batches": 4.0, "clip_guidance_scale": True, "tv_scale": "[1]*1000", "transformation_percent": [0.5]}
    restored = wire.restore_numbers(tags)
    assert restored["cutn_batches"] == 4 and isinstance(restored["cutn_batches"], int)
    assert restored["clip_guidance_scale"] == 1 and restored["tv_scale"] == "[1]*1000"
    assert wire.restore_numbers({"cutn_batches": "[2]*1000"})["cutn_batches"] == "[2]*1000"
    s = validate_settings(tokens=False, cutn_batches="[4]*500+[1]*500", use_vertical_symmetry=True)
    assert wire.settings_from_request({**wire.settings_to_tags(s), "batch_index": 0}) == s  # image 0 of the run


def parsed(*argv: str) -> dict:
    return vars(cli.build_parser().parse_args(list(argv)))


def test_the_command_line_reads_numbers_schedules_and_fractions():
    args = parsed(
        "--clip_guidance_scale", "[5000]*500+[2000]*500", "--tv_scale", "0.5", "--cutn_batches", "[4]*400+[2]*600",
        "--clamp_max", "0.1", "--use_horizontal_symmetry", "true", "--transformation_percent", "0.09", "0.5",
    )  # fmt: skip
    assert args["clip_guidance_scale"] == "[5000]*500+[2000]*500" and args["tv_scale"] == 0.5
    assert args["cutn_batches"] == "[4]*400+[2]*600" and args["clamp_max"] == 0.1
    assert args["use_horizontal_symmetry"] is True and args["transformation_percent"] == [0.09, 0.5]
    assert parsed("--cutn_batches", "2")["cutn_batches"] == 2
    with pytest.raises(SystemExit):
        parsed("--cutn_batches", "2.5")
    with pytest.raises(SystemExit):
        parsed("--transformation_percent", "soon")


def test_a_bad_schedule_on_the_command_line_exits_2_naming_it(capsys, tmp_path):
    code = cli.main(["--clip_guidance_scale", "[5000]*500+[2000]*400", "--output_dir", str(tmp_path), "--no_progress"])
    assert code == 2 and not any(tmp_path.iterdir())  # refused before anything started
    assert capsys.readouterr().err.startswith("error: clip_guidance_scale: must cover exactly 1000 steps")


def grpc(value):
    """A value as gRPC's Struct carries it: every number a float."""
    if isinstance(value, list):
        return [grpc(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def test_a_png_remakes_its_image_with_the_symmetry_and_the_schedules(tmp_path: Path):
    s = validate_settings(
        tokens=False, seed=11, clip_guidance_scale="[5000]*500+[2000]*500", tv_scale=0.5, cutn_batches="[2]*1000",
        use_horizontal_symmetry=True, use_vertical_symmetry=True, transformation_percent=[0.09, 0.5],
    )  # fmt: skip
    tags = {k: grpc(v) for k, v in wire.request_tags(s, 0).items()}  # as the Flow sends them back
    png = tmp_path / "remake.png"
    buffer = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(buffer)
    png.write_bytes(embed_settings(buffer.read_bytes(), image_settings(tags)))
    assert json.loads(Image.open(png).text["disco-diffusion"])["transformation_percent"] == [0.09, 0.5]
    got = {}

    def generate(**values):
        got.update(values)
        return []

    assert cli.main(["--settings", str(png), "--output_dir", str(tmp_path / "again")], generate=generate) == 0
    values = {k: v for k, v in got.items() if k not in ("host", "progress", "verbose", "token")}
    remade = validate_settings(values, tokens=False)
    assert remade == validate_settings(s, output_dir=str(tmp_path / "again"), n_batches=1, tokens=False)


def test_the_cpu_estimate_averages_a_scheduled_cutn_batches():
    plain = validate_settings(tokens=False, cut_overview="[4]*1000", cut_innercut="[12]*1000")
    assert mean_cutouts(plain) == 16 * 4
    scheduled = validate_settings(
        tokens=False, cut_overview="[4]*1000", cut_innercut="[12]*1000", cutn_batches="[4]*500+[2]*500"
    )
    assert mean_cutouts(scheduled) == 16 * 3


def test_a_served_flow_runs_schedules_and_symmetry_sent_over_rest(served_http):
    """Through the page's REST API (JSON tags: 1 and 0 may arrive as true and false, lists of numbers)."""
    import base64
    import urllib.request

    from disco_service.outputs import png_settings

    tags = {
        **TINY, "n_batches": 1, "seed": 5, "clip_guidance_scale": "[5000]*500+[2000]*500", "cutn_batches": 1,
        "tv_scale": "[0]*500+[1]*500", "use_vertical_symmetry": True, "transformation_percent": [0.5, 0.9],
    }  # fmt: skip
    body = json.dumps({"execEndpoint": "/generate", "data": [{"tags": tags}]}).encode()
    request = urllib.request.Request(f"{served_http}/post", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        doc = json.load(response)["data"][0]
    assert doc["tags"]["status"] == "done", doc["tags"].get("error")
    recipe = png_settings(base64.b64decode(doc["uri"].split(",")[1]))
    assert recipe["clip_guidance_scale"] == "[5000]*500+[2000]*500" and recipe["cutn_batches"] == 1
    assert recipe["use_vertical_symmetry"] is True and recipe["transformation_percent"] == [0.5, 0.9]


def test_an_animation_loads_lpips_when_a_scheduled_init_scale_is_on_at_some_step(tmp_path):
    from disco_service.client.animations import plan_animation

    for init_scale, want in (("[0]*500+[1000]*500", True), ("[0]*1000", False), (1000, True), (0, False)):
        s = validate_settings(
            tokens=False, animation_mode="2D", max_frames=1, init_scale=init_scale, output_dir=str(tmp_path), seed=1
        )
        assert plan_animation(s, b"a picture").with_init_loss is want, init_scale
