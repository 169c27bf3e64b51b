"""Prompt parsing, weights, style/artist, the CLIP token limit and text embeddings."""

import pytest
import torch

from disco.clip_model import encode_texts
from disco.prompts import Prompt, build_prompts, normalised_weights, parse_prompt
from disco.settings import SettingsError, validate_settings


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a lighthouse", Prompt("a lighthouse", 1.0)),
        ("a lighthouse:2", Prompt("a lighthouse", 2.0)),
        ("yellow color scheme:0.5", Prompt("yellow color scheme", 0.5)),
        ("no text: please:-1", Prompt("no text: please", -1.0)),
        ("a view: dawn", Prompt("a view: dawn", 1.0)),
        ("https://example.com/cat.png", Prompt("https://example.com/cat.png", 1.0)),
        ("https://example.com/cat.png:3", Prompt("https://example.com/cat.png", 3.0)),
        ("sea:1e-1", Prompt("sea", 0.1)),
    ],
)
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("bad", ["sea:nan", "sea:inf", ":2"])
def test_bad_weights_are_refused(bad):
    with pytest.raises(SettingsError, match="^text_prompts:"):
        parse_prompt(bad)


def test_weights_are_divided_by_the_absolute_sum():
    assert normalised_weights([1, 0.5]) == pytest.approx([2 / 3, 1 / 3])
    assert normalised_weights([2, -1]) == pytest.approx([2, -1])


def test_weights_summing_to_zero_are_refused():
    with pytest.raises(SettingsError, match="must not sum to 0"):
        normalised_weights([1, -1])


def test_style_and_artist_extend_the_first_prompt_only_as_the_module_does():
    # the module strips trailing ,.，。 and appends ",{style}" and ",{artist},trending on artstation"
    prompts = build_prompts(["a lighthouse."], style="oil painting", artist="Greg Rutkowski")
    assert prompts[0].text == "a lighthouse,oil painting,Greg Rutkowski,trending on artstation"
    prompts = build_prompts(["灯塔。:2", "yellow"], style="水彩", artist=None)
    assert prompts[0] == Prompt("灯塔,水彩", 2.0)  # the weight stays out of the text
    assert prompts[1] == Prompt("yellow", 1.0)
    assert build_prompts(["a lighthouse."])[0].text == "a lighthouse."  # no style, no artist: unchanged


@pytest.mark.parametrize(
    "prompts,message",
    [
        (["a lighthouse:1", "the sea:-1"], "must not sum to 0"),
        ([" ".join(["lighthouse"] * 90)], "CLIP tokens, the limit is 77"),
    ],
)
def test_bad_prompts_are_refused_by_the_validator_before_any_model(prompts, message):
    with pytest.raises(SettingsError, match=f"^text_prompts: .*{message}"):
        validate_settings(text_prompts=prompts)


def test_text_embeddings_are_normalised_and_exclude_the_weight(tiny_models):
    clip = tiny_models.clip
    embeds = encode_texts(clip, ["a lighthouse", "a lighthouse:2"])
    assert embeds.shape == (2, 1024)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))
    # the parser strips the suffix; CLIP would see different text otherwise
    weighted = encode_texts(clip, [parse_prompt("a lighthouse:2").text])
    torch.testing.assert_close(weighted[0], embeds[0])
    assert not torch.allclose(embeds[0], embeds[1])


def test_overlong_prompt_is_refused_with_the_limit(tiny_models):
    with pytest.raises(SettingsError, match="limit is 77"):
        encode_texts(tiny_models.clip, ["word " * 80])
