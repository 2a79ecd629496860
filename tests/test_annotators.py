"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1, and the world oracle's answers."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from dataclasses import replace

import pytest
from PIL import Image

from mmkd.annotators import AnnotatorConfig, ParseError, Prompt, Request, extract_json, make_annotator
from mmkd.config import ConfigError, to_run_config
from mmkd.data_builders.prompts import (
    PROMPTS,
    check_routes,
    parse_interleaved,
    parse_knowledge,
    parse_semantic,
    parse_vqa,
)
from mmkd.data_builders.sources import check_sources
from mmkd.world import claims, descriptions
from mmkd.world.scene import WorldConfig, sample_scene
from tests.conftest import composed
from tests.fake_openai import FakeOpenAI, prompt_text

SECRET = "sk-test-0123456789-secret"


class ModeServer(FakeOpenAI):
    """Behaviour chosen by the word the prompt ends with:

    valid / malformed_then_valid / slow_then_valid / 500_then_valid / 429_then_valid / always_500 /
    bad_request / refusal / image (answers with the size of the image it was sent) /
    dropped_disconnect, dropped_reset, dropped_truncate (the connection breaks once, then valid).
    """

    def __init__(self):
        self.by_mode: dict[str, int] = {}
        super().__init__(self.respond)

    def respond(self, body: dict, _: int) -> tuple:
        mode = prompt_text(body).split()[-1]
        n = self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        if mode == "slow_then_valid" and n == 1:
            time.sleep(0.6)
        if (mode == "500_then_valid" and n == 1) or mode == "always_500":
            return 500, "boom"
        if mode == "429_then_valid" and n == 1:
            return 429, "slow down", {"Retry-After": "0"}
        if mode == "bad_request":
            return 400, "no such model"
        if mode.startswith("dropped_") and n == 1:  # dropped_disconnect / dropped_reset / dropped_truncate
            return mode.removeprefix("dropped_"), ""
        if mode == "refusal":
            return 200, "I'm sorry, I can't help with that."
        if mode == "malformed_then_valid" and len(body["messages"]) == 1:
            return 200, '{"value": 1,'
        if mode == "image":
            url = body["messages"][0]["content"][0]["image_url"]["url"]
            assert url.startswith("data:image/png;base64,")
            im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            return 200, json.dumps({"value": f"{im.size[0]}x{im.size[1]}"})
        return 200, json.dumps({"value": mode})


@pytest.fixture
def server():
    s = ModeServer()
    yield s
    s.close()


PROMPT = Prompt("test", "v1", "Answer in JSON. Mode: {mode}", "json", "test")


def _parse(text):
    value = extract_json(text)
    if not isinstance(value, dict) or "value" not in value:
        raise ParseError("malformed_json", "need an object with 'value'")
    return value["value"]


def _config(url, tmp_path, **kw):
    base = dict(
        backend="openai",
        model="test-model",
        base_url=url,
        api_key_env="MMKD_TEST_KEY",
        timeout_s=0.3,
        max_retries=2,
        backoff_s=0.01,
        concurrency=4,
        cache_dir=str(tmp_path / "cache"),
        price_input_per_mtok=1.0,
        price_output_per_mtok=2.0,
    )
    return AnnotatorConfig(**{**base, **kw})


MODES = [
    "valid",
    "malformed_then_valid",
    "slow_then_valid",
    "500_then_valid",
    "429_then_valid",
    "always_500",
    "bad_request",
    "refusal",
]


def test_a_dropped_reset_or_truncated_connection_is_retried(server, tmp_path):
    """A server that closes, resets or cuts short a reply once: each request is retried and succeeds
    (before, RemoteDisconnected, ConnectionResetError and IncompleteRead escaped and ended the build)."""
    modes = ["dropped_disconnect", "dropped_reset", "dropped_truncate"]
    annotator = make_annotator(_config(server.url, tmp_path, concurrency=1))
    out = {
        r.key: r for r in annotator.annotate([Request(m, PROMPT, _parse, fields={"mode": m}) for m in modes])
    }
    assert {m: (out[m].value, out[m].error) for m in modes} == {m: (m, None) for m in modes}
    assert annotator.report()["retries.connection"] == 3 and server.by_mode == dict.fromkeys(modes, 2)


def test_a_server_that_refuses_everyone_stops_the_build_at_once(tmp_path):
    """A wrong key (401) or URL (404), or nobody listening: not a dataset of rejects, but an error at the
    first request, naming the URL and the status (before, the build finished with 0 samples)."""
    from mmkd.annotators.base import AnnotatorUnreachable

    requests = [Request(str(i), PROMPT, _parse, fields={"mode": "valid"}) for i in range(3)]
    for status in (401, 404):
        server = FakeOpenAI(lambda body, calls, status=status: (status, "no"))
        try:
            annotator = make_annotator(_config(server.url, tmp_path, concurrency=1))
            with pytest.raises(
                AnnotatorUnreachable, match=rf"http_{status}: {server.url}.* answered {status}"
            ):
                annotator.annotate(requests)
            assert server.calls == 1  # no retries, no further requests
        finally:
            server.close()
    nobody = FakeOpenAI(lambda body, calls: (200, "{}"))
    nobody.close()  # the port is free again: connections are refused
    annotator = make_annotator(_config(nobody.url, tmp_path, concurrency=1))
    with pytest.raises(AnnotatorUnreachable, match=r"refused: .*after 2 retries"):
        annotator.annotate(requests)
    # A host name that does not resolve: at once, without retries (`.invalid` never resolves).
    nowhere = make_annotator(_config("http://no-such-host.invalid:8000/v1", tmp_path, concurrency=1))
    with pytest.raises(AnnotatorUnreachable, match=r"connection: http://no-such-host\.invalid"):
        nowhere.annotate(requests)
    assert "retries.connection" not in nowhere.report()


def test_openai_backend_retries_repairs_rejects_and_caches(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_TEST_KEY", SECRET)
    requests = [Request(m, PROMPT, _parse, fields={"mode": m}) for m in MODES]
    annotator = make_annotator(_config(server.url, tmp_path))
    out = {r.key: r for r in annotator.annotate(requests)}

    for m in ("valid", "malformed_then_valid", "slow_then_valid", "500_then_valid", "429_then_valid"):
        assert out[m].error is None and out[m].value == m
    assert out["malformed_then_valid"].repairs == 1
    assert out["always_500"].error == "http_500" and "after 2 retries" in out["always_500"].detail
    assert out["bad_request"].error == "http_400"
    assert out["refusal"].error == "refusal" and out["refusal"].repairs == 2
    s = annotator.report()
    assert s["retries.timeout"] == 1 and s["retries.http_429"] == 1
    assert s["retries.http_500"] == 1 + 2  # one for 500_then_valid, two for always_500
    assert "retries.http_400" not in s  # a 4xx other than 429 is not retried
    assert s["parse_errors.malformed_json"] == 1 and s["parse_errors.refusal"] == 3
    assert s["rejects"] == 3 and s["requests"] == len(MODES) and s["repaired"] == 1
    assert server.by_mode["always_500"] == 3 and server.by_mode["bad_request"] == 1
    assert server.by_mode["slow_then_valid"] == 2 and server.by_mode["refusal"] == 3
    # Token accounting: 10 + 5 tokens per 200 reply; cost from the configured prices.
    replies = 1 + 2 + 1 + 1 + 1 + 3  # valid, malformed+repair, slow, 500, 429, refusal x3
    assert s["prompt_tokens"] == 10 * replies and s["completion_tokens"] == 5 * replies
    assert s["cost_usd"] == pytest.approx((10 * replies * 1.0 + 5 * replies * 2.0) / 1e6)
    assert server.auth == {f"Bearer {SECRET}"}

    # A rerun with a fresh annotator costs nothing for what succeeded: every reply comes from the cache.
    calls_before = dict(server.by_mode)
    again = make_annotator(_config(server.url, tmp_path))
    out2 = {r.key: r for r in again.annotate(requests)}
    assert {k: (r.value, r.error) for k, r in out2.items()} == {k: (r.value, r.error) for k, r in out.items()}
    for m in (
        "valid",
        "malformed_then_valid",
        "slow_then_valid",
        "500_then_valid",
        "429_then_valid",
        "refusal",
    ):
        assert server.by_mode[m] == calls_before[m], m
    r2 = again.report()
    assert r2["cache_hits"] == replies and r2.get("prompt_tokens", 0) == 0 and r2["cost_usd"] == 0
    assert r2["cached_prompt_tokens"] == 10 * replies

    # The key never leaves the environment: not in responses, reports or the cache file.
    dumped = json.dumps([vars(r) for r in out.values()]) + json.dumps(s) + json.dumps(r2)
    assert SECRET not in dumped
    assert SECRET.encode() not in (tmp_path / "cache" / "responses.sqlite").read_bytes()


def test_images_travel_as_data_urls_and_enter_the_cache_key(server, tmp_path):
    annotator = make_annotator(_config(server.url, tmp_path))
    reqs = [
        Request(f"im{i}", PROMPT, _parse, fields={"mode": "image"}, images=[Image.new("RGB", (8 + i, 8))])
        for i in range(3)
    ]
    assert [r.value for r in annotator.annotate(reqs)] == ["8x8", "9x8", "10x8"]
    assert server.by_mode["image"] == 3  # same text, different images: three cache keys


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"annotator\.backend='gpt'"):
        AnnotatorConfig(backend="gpt").validate()
    with pytest.raises(ValueError, match=r"annotator\.hallucination=1\.5"):
        AnnotatorConfig(hallucination=1.5).validate()


@pytest.mark.parametrize(
    "parser, text, reason",
    [
        (parse_vqa, '[{"question": "q", "answer": "a"}]', "qa_count"),
        (parse_vqa, '[{"question": "q", "answer": ""}]', "empty_answer"),
        (parse_vqa, '{"question": "q"}', "malformed_json"),
        (parse_semantic, '{"hierarchical semantic information": {"type theme": ""}}', "missing_field"),
        (parse_interleaved(3), "a <Image 1> b <Image 3> c <Image 2>", "bad_placeholders"),
        (parse_knowledge, '{"Fact": [{"level": "L1"}], "Abstract": []}', "malformed_json"),
        (parse_knowledge, "", "empty_answer"),
    ],
)
def test_parsers_reject_with_reasons(parser, text, reason):
    with pytest.raises(ParseError) as e:
        parser(text)
    assert e.value.reason == reason


def test_parsers_accept_real_model_output():
    fenced = (
        "```json\n[" + ", ".join(f'{{"question": "q{i}", "answer": "a{i}"}}' for i in range(6)) + "]\n```"
    )
    assert parse_vqa("Here you go:\n" + fenced)[0] == ("q0", "a0")
    assert parse_interleaved(3)("a <Image 1> b <Image 2> c <Image 3>") == "a <image> b <image> c <image>"
    assert parse_knowledge(
        '{"Fact": [{"fact": "The cat is black", "level": "L1"}], "Abstract": ["cozy"]}'
    ) == (
        ["the cat is black"],
        ["cozy"],
    )


def test_oracle_answers_every_prompt_and_vqa1_reads_only_the_caption():
    cfg = WorldConfig(image_size=48)
    oracle = make_annotator(AnnotatorConfig())
    a, b = (sample_scene(cfg, "t", i, layout="objects", n_objects=3) for i in (1, 2))
    ctx = {"scenes": [a.to_json(), b.to_json()]}
    caption = descriptions.caption(a, descriptions.Noise(), random.Random(0))
    (r,) = oracle.annotate([Request("x", PROMPTS["vqa_from_caption"], parse_vqa, fields={"cap": caption})])
    assert 5 <= len(r.value) <= 15 and r.value[0][0] == "What does this image show as a whole?"
    for q, ans in r.value:
        assert all(claims.holds(c, [a]) for c in claims.read_qa(q, ans)), (q, ans)
    # The same caption with no scene graph gives the same Q/A: the oracle read only the text.
    (r2,) = oracle.annotate([Request("x", PROMPTS["vqa_from_caption"], parse_vqa, fields={"cap": caption})])
    assert r2.value == r.value
    (sem,) = oracle.annotate(
        [Request("s", PROMPTS["semantic"], parse_semantic, context={"scenes": ctx["scenes"][:1]})]
    )
    assert sem.value["type theme"] == "everyday scene" and sem.value["domain direction"] == a.theme


def test_noise_makes_captions_wrong_at_the_configured_rates():
    cfg = WorldConfig(image_size=48)
    noisy = descriptions.Noise(omission=0.0, hallucination=1.0)
    false_claims = 0
    for i in range(50):
        scene = sample_scene(cfg, "t", i, layout="objects")
        got = claims.read(descriptions.caption(scene, noisy, random.Random(i)))
        false_claims += any(claims.holds(c, [scene]) is False for c in got)
    assert false_claims >= 45  # every caption invents an object (when a cell is free)
    for i in range(50):
        scene = sample_scene(cfg, "t", i)
        got = claims.read(descriptions.caption(scene, descriptions.Noise(), random.Random(i)))
        assert all(claims.holds(c, [scene]) is not False for c in got)


def test_transformers_backend_runs_a_local_checkpoint(world, tmp_path):
    """Plumbing on a tiny random Llama saved locally: prompt -> generate -> parse -> reject or value."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    _, root = world
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(root / "tokenizer.json"), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=8192,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    cfg = AnnotatorConfig(backend="transformers", model=str(ckpt), max_tokens=8, json_repairs=1)
    annotator = make_annotator(cfg)
    text = Request("t", PROMPTS["knowledge"], parse_knowledge, fields={"text": "The ball is red."})
    image = Request("i", PROMPTS["caption"], _parse, images=[Image.new("RGB", (8, 8))])
    r_text, r_image = annotator.annotate([text, image])
    assert r_text.error == "malformed_json" and r_text.repairs == 1  # random weights write no JSON
    assert r_image.error == "images_unsupported" and "annotator=openai" in r_image.detail
    s = annotator.report()
    assert s["requests"] == 2 and 0 < s["completion_tokens"] <= 2 * 8 and s["prompt_tokens"] > 500
    # Greedy decoding: the same request gives the same answer.
    again = make_annotator(cfg).annotate([text])[0]
    assert again.error == r_text.error and again.detail == r_text.detail
    with pytest.raises(ValueError, match=r"annotator\.model='/nonexistent'.*never downloads"):
        make_annotator(AnnotatorConfig(backend="transformers", model="/nonexistent"))


def test_routes_send_a_prompt_to_its_own_model_and_name_a_bad_one():
    cfg = AnnotatorConfig(backend="openai", model="default", routes={"scale_text_quality": "llm"}).validate()
    assert cfg.route("scale_text_quality") == ("llm", cfg.base_url) and cfg.route("caption") == (
        "default",
        cfg.base_url,
    )
    served = make_annotator(replace(cfg, cache_dir=""))  # the route is part of what answers its prompt only
    assert served.identity(["scale_text_quality"])["routes"] == {"scale_text_quality": "llm"}
    assert "routes" not in served.identity(["caption"])
    elsewhere = replace(cfg, routes={"caption": "vlm@http://10.0.0.2:8000/v1"}).validate()
    assert elsewhere.route("caption") == ("vlm", "http://10.0.0.2:8000/v1")
    with pytest.raises(ConfigError, match=r"annotator\.routes\.captoin: no prompt of that name; prompts: \["):
        check_routes(replace(cfg, routes={"captoin": "vlm"}).validate().routes)  # the builders' check
    run = to_run_config(composed("annotator=openai", "+annotator.routes.captoin=vlm"))
    with pytest.raises(ConfigError, match=r"annotator\.routes\.captoin: no prompt"):
        check_sources(run.recipe.name, run.recipe.sources(), run)  # before any compute
    with pytest.raises(
        ValueError, match=r"annotator\.routes\.caption='vlm@host': must be MODEL or MODEL@http"
    ):
        replace(cfg, routes={"caption": "vlm@host"}).validate()
    with pytest.raises(
        ValueError, match=r"annotator\.routes: served models only \(annotator=openai\), not 'world'"
    ):
        replace(cfg, backend="world").validate()
