"""Describe (discodiff.captions.describe): a tiny random Qwen2-Audio model saved with its processor and loaded through
the same ``from_pretrained`` path as the real one (audio resampled and cut before it reaches the model, seeded
sampling that leaves the global random state alone, provenance, one-line load errors), an OpenAI-compatible endpoint
served from a local ``http.server`` (the request's model, messages and WAV; a refusal raises at once, a server error
is retried then raised, and nothing is swallowed), and the choice between the two."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from discodiff.captions.describe import (
    DESCRIBE_TEMPLATE,
    EndpointCaptioner,
    TransformersCaptioner,
    make_captioner,
)
from discodiff.captions.endpoint import ChatEndpoint
from discodiff.captions.templates import PromptTemplate
from discodiff.errors import AudioError, ConditioningError, ConfigError, EndpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
# the chat template of Qwen/Qwen2-Audio-7B-Instruct: an audio part is recognised by its "audio" (or "audio_url") key
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHUNK_SECONDS = 2  # the tiny feature extractor hears 2 s (Qwen2-Audio: 30 s)


def tiny_tokenizer():
    """A byte-level BPE trained offline on a few strings, with Qwen2-Audio's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([DESCRIBE_TEMPLATE.system, DESCRIBE_TEMPLATE.user,
                                   "A baroque chorale in F major for choir, viola and bassoon at 99 bpm."], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:])


def save_tiny_qwen2_audio(directory):
    """A random Qwen2-Audio (1 encoder layer, 1 decoder layer, width 16) and its processor, saved to ``directory``."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = tiny_tokenizer()
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=CHUNK_SECONDS)
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer,
                                    chat_template=QWEN2_AUDIO_CHAT_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", "d_model": 16, "encoder_layers": 1,
                      "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "num_mel_bins": 128,
                      "max_source_positions": features.nb_max_frames // 2},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 512, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        audio_token_index=processor.audio_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return str(save_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio")))


@pytest.fixture(scope="module")
def captioner(tiny_model_dir):
    return TransformersCaptioner.from_pretrained(tiny_model_dir, device="cpu", max_new_tokens=8)


def noise(seconds, sample_rate=44100, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sample_rate))).astype(np.float32)


def spy_generate(monkeypatch, captioner):
    """Record the inputs of every ``generate`` call of ``captioner.model``."""
    calls, original = [], captioner.model.generate

    def generate(**inputs):
        calls.append(inputs)
        return original(**inputs)

    monkeypatch.setattr(captioner.model, "generate", generate)
    return calls


# --- the prompt template ---------------------------------------------------------------------------------------


def test_describe_template_is_versioned_and_its_text_is_pinned():
    assert DESCRIBE_TEMPLATE.id == "describe-v1" and DESCRIBE_TEMPLATE.fields == ()
    # changing the prompt changes every description: raise `version` and update this fingerprint with it
    assert DESCRIBE_TEMPLATE.fingerprint == "29b506733633"


# --- the transformers captioner --------------------------------------------------------------------------------


def test_tiny_model_loads_through_from_pretrained_as_qwen2_audio(captioner):
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    assert type(captioner.model) is Qwen2AudioForConditionalGeneration
    assert type(captioner.processor) is Qwen2AudioProcessor
    assert captioner.sample_rate == 16000 and captioner.max_seconds == CHUNK_SECONDS


def test_clips_reach_the_model_resampled_and_cut_to_their_first_seconds(captioner, monkeypatch):
    calls = spy_generate(monkeypatch, captioner)
    descriptions = captioner.describe([noise(1.0), noise(3.5, seed=1)], 44100, seed=0)

    assert len(calls) == 1  # one batch, one call
    assert len(descriptions) == 2 and all(isinstance(text, str) for text in descriptions)
    frames = calls[0]["feature_attention_mask"].sum(-1).tolist()
    assert frames == [100, 100 * CHUNK_SECONDS]  # 10 ms mel frames of 1 s, and of the first 2 s of 3.5 s
    prompt = captioner.processor.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=False)
    assert DESCRIBE_TEMPLATE.system in prompt and DESCRIBE_TEMPLATE.user in prompt
    audio_tokens = (calls[0]["input_ids"] == captioner.model.config.audio_token_id).sum(-1).tolist()
    assert audio_tokens == [25, 50]  # the audio tower's 4× downsampling of 100 and 200 frames
    assert all(DESCRIBE_TEMPLATE.user not in text for text in descriptions)  # only the reply, not the prompt


def test_prepare_cuts_the_first_max_seconds_and_resamples_with_soxr(captioner):
    ramp = np.linspace(-0.5, 0.5, 44100 * 3, dtype=np.float32)
    clip, = captioner.prepare([ramp], 44100)
    expected = soxr.resample(ramp[: 44100 * CHUNK_SECONDS], 44100, 16000, quality="HQ")
    assert clip.dtype == np.float32 and clip.shape == (16000 * CHUNK_SECONDS,)
    np.testing.assert_allclose(clip[100:-100], expected[100:-100], atol=1e-5)  # edges: resampler warm-up


def test_sampling_is_seeded_and_leaves_the_global_random_state_alone(tiny_model_dir):
    sampler = TransformersCaptioner.from_pretrained(tiny_model_dir, device="cpu", max_new_tokens=16, do_sample=True)
    clips = [noise(1.0), noise(1.5, seed=1)]
    state = torch.get_rng_state()
    first = sampler.describe(clips, 44100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert sampler.describe(clips, 44100, seed=3) == first
    assert sampler.describe(clips, 44100, seed=4) != first


def test_greedy_descriptions_do_not_depend_on_the_seed(captioner):
    clips = [noise(1.0)]
    assert captioner.describe(clips, 44100, seed=0) == captioner.describe(clips, 44100, seed=9)


def test_provenance_names_model_template_and_generation_settings(captioner, tiny_model_dir):
    provenance = captioner.provenance()
    assert json.loads(json.dumps(provenance)) == provenance
    assert provenance["model"] == tiny_model_dir and provenance["revision"] is None  # a local directory
    assert provenance["model_class"] == "Qwen2AudioForConditionalGeneration" and provenance["dtype"] == "float32"
    assert provenance["template"] == "describe-v1"
    assert provenance["template_sha256"] == DESCRIBE_TEMPLATE.fingerprint
    assert provenance["generation"] == {"max_new_tokens": 8, "do_sample": False}
    assert (provenance["sample_rate"], provenance["max_seconds"], provenance["window"]) == (16000, 2.0, "first")


def test_bad_clips_and_seeds_are_refused_before_the_model_runs(captioner, monkeypatch):
    calls = spy_generate(monkeypatch, captioner)
    with pytest.raises(AudioError, match=r"clip 1: .*mono clip shaped \[T\]"):
        captioner.describe([noise(1.0), np.zeros((2, 16000), np.float32)], 16000, seed=0)
    with pytest.raises(AudioError, match="clip 0: has NaN"):
        captioner.describe([np.full(16000, np.nan, np.float32)], 16000, seed=0)
    with pytest.raises(ConfigError, match="seed"):
        captioner.describe([noise(1.0)], 16000, seed=-1)
    with pytest.raises(ConfigError, match="sample_rate"):
        captioner.describe([noise(1.0)], 0, seed=0)
    assert calls == [] and captioner.describe([], 16000, seed=0) == []


def test_a_missing_model_is_a_one_line_error_naming_the_id_and_the_local_path_option():
    with pytest.raises(ConditioningError) as caught:
        TransformersCaptioner.from_pretrained("no-such-org/no-such-audio-model", device="cpu")
    message = str(caught.value)
    assert "no-such-org/no-such-audio-model" in message and "local directory" in message and "\n" not in message


def test_a_model_that_is_not_an_audio_language_model_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ConditioningError, match="'bert' model, which is not an audio-language"):
        TransformersCaptioner.from_pretrained(tmp_path, device="cpu")


# --- the endpoint captioner ------------------------------------------------------------------------------------


class FakeChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that records each request body and answers with the next
    ``(status, reply text)`` of :attr:`replies` (the last one repeats)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[tuple[int, str]] = [(200, "A chorale.")]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers),
                                        "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                status, text = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                body = (json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
                        if status == 200 else f"error {status}: {text}").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeChatServer() as running:
        yield running


def endpoint_captioner(server, **kwargs) -> EndpointCaptioner:
    return EndpointCaptioner(ChatEndpoint(server.url, "audio-model", api_key="", retries=2, backoff=0.0), **kwargs)


def decode_wav(part: dict) -> tuple[np.ndarray, int]:
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    return sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])), dtype="float32")


def test_endpoint_request_carries_model_messages_and_the_clip_as_wav(server):
    server.replies = [(200, "  First reply. "), (200, "Second reply.")]
    captioner = endpoint_captioner(server, max_seconds=2.0, temperature=0.3, max_tokens=64)
    clips = [noise(1.0), noise(3.0, seed=1)]
    assert captioner.describe(clips, 44100, seed=5) == ["First reply.", "Second reply."]

    assert [request["path"] for request in server.requests] == ["/v1/chat/completions"] * 2
    for request, clip, seconds in zip(server.requests, captioner.prepare(clips, 44100), (1.0, 2.0)):
        body = request["body"]
        assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == ("audio-model", 0.3, 64, 5)
        system, user = body["messages"]
        assert system == {"role": "system", "content": DESCRIBE_TEMPLATE.system}
        assert user["role"] == "user" and user["content"][0] == {"type": "text", "text": DESCRIBE_TEMPLATE.user}
        audio, sample_rate = decode_wav(user["content"][1])
        assert sample_rate == 16000 and audio.shape == (int(seconds * 16000),)
        np.testing.assert_allclose(audio, clip, atol=1 / 2 ** 15)  # 16-bit PCM of the prepared clip


def test_endpoint_refusal_raises_at_once(server):
    server.replies = [(400, "unknown model")]
    with pytest.raises(EndpointError, match="HTTP 400"):
        endpoint_captioner(server).describe([noise(1.0)], 44100, seed=0)
    assert len(server.requests) == 1


def test_endpoint_server_error_is_retried_then_raised(server):
    server.replies = [(503, "overloaded")]
    with pytest.raises(EndpointError, match="failed 3 times.*HTTP 503"):
        endpoint_captioner(server).describe([noise(1.0)], 44100, seed=0)
    assert len(server.requests) == 3  # the first try and two retries


def test_endpoint_recovers_when_a_retry_succeeds(server):
    server.replies = [(503, "overloaded"), (200, "Recovered.")]
    assert endpoint_captioner(server).describe([noise(1.0)], 44100, seed=0) == ["Recovered."]
    assert len(server.requests) == 2


def test_a_failure_inside_a_batch_is_never_swallowed(server):
    server.replies = [(200, "Fine."), (400, "bad audio")]
    with pytest.raises(EndpointError, match="HTTP 400"):
        endpoint_captioner(server).describe([noise(1.0), noise(1.0, seed=1), noise(1.0, seed=2)], 44100, seed=0)
    assert len(server.requests) == 2  # stopped at the failing clip


def test_endpoint_provenance(server):
    captioner = endpoint_captioner(server)
    assert captioner.max_seconds == 30 and captioner.sample_rate == 16000
    assert captioner.provenance() == {
        "captioner": "endpoint", "model": "audio-model", "endpoint": f"{server.url}/chat/completions",
        "template": "describe-v1", "template_sha256": DESCRIBE_TEMPLATE.fingerprint, "sample_rate": 16000,
        "max_seconds": 30.0, "window": "first", "generation": {"temperature": 0.0, "max_tokens": 256}}


def test_a_template_with_slots_is_refused():
    template = PromptTemplate("describe", 2, "system", "Describe {what}.")
    with pytest.raises(ConfigError, match="missing"):
        EndpointCaptioner(ChatEndpoint("http://127.0.0.1:1/v1", "m"), template=template)


# --- choosing a captioner --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    ({}, "exactly one of a model .* got neither"),
    ({"model": "some/model", "endpoint": "http://127.0.0.1:8000/v1"}, "got both"),
    ({"endpoint": "http://127.0.0.1:8000/v1"}, "needs the name of the model"),
    ({"model": "some/model", "endpoint_model": "served"}, "only applies with an endpoint"),
    ({"endpoint": "ftp://host", "endpoint_model": "served"}, "must start with http"),
])
def test_make_captioner_needs_exactly_one_source(arguments, message):
    with pytest.raises(ConfigError, match=message):
        make_captioner(**arguments)


def test_make_captioner_builds_either_kind(tiny_model_dir):
    remote = make_captioner(endpoint="http://127.0.0.1:8000/v1", endpoint_model="served", max_tokens=32)
    assert isinstance(remote, EndpointCaptioner) and remote.provenance()["model"] == "served"
    assert remote.max_tokens == 32
    local = make_captioner(model=tiny_model_dir, device="cpu")
    assert isinstance(local, TransformersCaptioner) and local.max_new_tokens == 200
