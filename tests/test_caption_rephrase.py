"""Rephrasing of discodiff.captions.rephrase: reply parsing, a tiny random chat model loaded through the real
``from_pretrained`` path (batching, left padding, seeds, global random state, provenance), an OpenAI-compatible
endpoint served from a thread, the seeded template fallback and the factory."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from discodiff.captions.endpoint import ChatEndpoint
from discodiff.captions.filters import filter_captions
from discodiff.captions.rephrase import (
    DEFAULT_REPHRASE_MODEL,
    PATTERNS,
    REPHRASE_TEMPLATE,
    EndpointRephraser,
    TemplateRephraser,
    TransformersRephraser,
    _parse_reply,
    make_rephraser,
    rephrase_messages,
)
from discodiff.captions.tags import Tags
from discodiff.captions.templates import PromptTemplate
from discodiff.conditioning.text import ConditionerNotFoundError
from discodiff.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHORALE = Tags(genres=("baroque chorale",), instruments=("choir aahs", "viola", "bassoon"), tempo_bpm=99,
               key="F major", instruments_complete=True)
ROCK = Tags(genres=("rock",), instruments=("electric guitar", "drums"), moods=("energetic",), tempo_bpm=128.4)
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# --- reply parsing and the prompt --------------------------------------------------------------------------------


def test_parse_reply_strips_numbering_bullets_quotes_and_headings():
    reply = ("Here are three captions:\n\n1. \"A baroque chorale in F major.\"\n2) **Choir aahs over viola.**\n"
             "  - \u201cA slow hymn for bassoon\u201d  \n\u2022 '99 bpm chorale in F major'\n(5) A fifth one.")
    assert _parse_reply(reply, 5) == ["A baroque chorale in F major.", "Choir aahs over viola.",
                                      "A slow hymn for bassoon", "99 bpm chorale in F major", "A fifth one."]
    assert _parse_reply(reply, 2) == ["A baroque chorale in F major.", "Choir aahs over viola."]


def test_parse_reply_gives_fewer_captions_rather_than_padding():
    assert _parse_reply("Only one caption here.\n\n   \n-\n\"\"", 4) == ["Only one caption here."]
    assert _parse_reply("", 3) == []
    # numbers that belong to the caption stay
    assert _parse_reply("4/4 chorale at 99 bpm\n99 bpm hymn", 3) == ["4/4 chorale at 99 bpm", "99 bpm hymn"]


def test_rephrase_template_asks_for_tag_precedence_and_one_caption_per_line():
    assert REPHRASE_TEMPLATE.id == "rephrase-v1"
    assert set(REPHRASE_TEMPLATE.fields) == {"description", "tags", "num_captions"}
    system = REPHRASE_TEMPLATE.system
    assert "follow the tags" in system and "40 words" in system and "one caption per line" in system
    messages = rephrase_messages(REPHRASE_TEMPLATE, "  A choir sings.  ", CHORALE, 4)
    assert [message["role"] for message in messages] == ["system", "user"]
    assert "Description: A choir sings.\n" in messages[1]["content"]
    assert f"Tags: {CHORALE.summary()}\n" in messages[1]["content"]
    assert "Write 4 captions." in messages[1]["content"]
    assert "Description: (none)\n" in rephrase_messages(REPHRASE_TEMPLATE, "", CHORALE, 4)[1]["content"]


# --- a tiny random chat model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat_model_dir(tmp_path_factory):
    """A random 2-layer ``Qwen2ForCausalLM`` and a byte-level BPE tokenizer with a chat template, saved the way a
    hub model is (``from_pretrained`` reads them like the real one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([REPHRASE_TEMPLATE.system, REPHRASE_TEMPLATE.user, CHORALE.summary(), ROCK.summary(),
                                 "A baroque chorale in F major at 99 bpm for choir aahs, viola and bassoon."], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=CHAT_TEMPLATE)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-chat")
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_rephraser(tiny_chat_model_dir):
    return TransformersRephraser.from_pretrained(tiny_chat_model_dir, max_new_tokens=24)


DESCRIPTIONS = ["A choir sings slowly.", "Strings and a bassoon, played gently over a walking bass line.", ""]
CLIP_TAGS = [CHORALE, ROCK, Tags()]


def test_tiny_model_batch_gives_one_list_per_clip_and_is_seeded(tiny_rephraser):
    captions = tiny_rephraser.rephrase(DESCRIPTIONS, CLIP_TAGS, num_captions=3, seed=7)
    assert len(captions) == 3
    assert all(isinstance(clip, list) and len(clip) <= 3 for clip in captions)
    assert all(isinstance(caption, str) and caption and caption == caption.strip()
               for clip in captions for caption in clip)
    assert tiny_rephraser.rephrase(DESCRIPTIONS, CLIP_TAGS, num_captions=3, seed=7) == captions
    assert tiny_rephraser.rephrase(DESCRIPTIONS, CLIP_TAGS, num_captions=3, seed=8) != captions


def test_tiny_model_leaves_the_global_random_state_alone(tiny_rephraser):
    state = torch.random.get_rng_state()
    tiny_rephraser.rephrase(DESCRIPTIONS[:1], CLIP_TAGS[:1], num_captions=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_prompts_use_the_chat_template_with_the_generation_prompt(tiny_rephraser):
    prompt, = tiny_rephraser.prompts(DESCRIPTIONS[:1], CLIP_TAGS[:1], 3)
    assert prompt.startswith("<|im_start|>system\n" + REPHRASE_TEMPLATE.system)
    assert f"Description: {DESCRIPTIONS[0]}\nTags: {CHORALE.summary()}" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_greedy_batch_matches_clip_by_clip_generation(tiny_chat_model_dir):
    # left padding: a clip's reply does not depend on the longer prompts batched with it
    greedy = TransformersRephraser.from_pretrained(tiny_chat_model_dir, max_new_tokens=12, temperature=0.0)
    batched = greedy.rephrase(DESCRIPTIONS, CLIP_TAGS, num_captions=2, seed=0)
    alone = [greedy.rephrase([description], [tags], num_captions=2, seed=0)[0]
             for description, tags in zip(DESCRIPTIONS, CLIP_TAGS)]
    assert batched == alone


def test_tiny_model_provenance_names_model_template_and_settings(tiny_rephraser, tiny_chat_model_dir):
    provenance = tiny_rephraser.provenance()
    assert provenance["rephraser"] == "transformers"
    assert provenance["model"] == str(tiny_chat_model_dir)
    assert provenance["template"] == "rephrase-v1"
    assert provenance["template_sha256"] == REPHRASE_TEMPLATE.fingerprint
    assert provenance["generation"] == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0,
                                        "repetition_penalty": 1.0, "max_new_tokens": 24}
    json.dumps(provenance)


def test_missing_model_is_a_one_line_error_naming_the_id():
    with pytest.raises(ConditionerNotFoundError) as error:
        TransformersRephraser.from_pretrained("no-such-org/no-such-rephraser")
    message = str(error.value)
    assert "no-such-org/no-such-rephraser" in message and "local directory" in message and "\n" not in message
    assert DEFAULT_REPHRASE_MODEL == "Qwen/Qwen2.5-1.5B-Instruct"


def test_tokenizer_without_chat_template_is_refused(tiny_rephraser):
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=tiny_rephraser.tokenizer.backend_tokenizer,
                                    eos_token="<|im_end|>")
    with pytest.raises(ConfigError, match="chat template"):
        TransformersRephraser(tiny_rephraser.model, plain, "plain")


def test_inputs_are_checked_before_work(tiny_rephraser):
    wrong_slots = PromptTemplate("rephrase", 2, "Caption this.", "Description: {description}")
    with pytest.raises(ConfigError, match="slots"):
        TransformersRephraser(tiny_rephraser.model, tiny_rephraser.tokenizer, "tiny", template=wrong_slots)
    with pytest.raises(DataError, match="2 descriptions for 1 tag sets"):
        tiny_rephraser.rephrase(["a", "b"], [CHORALE], 3, seed=0)
    with pytest.raises(ConfigError, match="num_captions"):
        tiny_rephraser.rephrase(["a"], [CHORALE], 0, seed=0)
    with pytest.raises(DataError, match="not Tags"):
        tiny_rephraser.rephrase(["a"], [{"genres": ["rock"]}], 3, seed=0)
    assert tiny_rephraser.rephrase([], [], 3, seed=0) == []


# --- an OpenAI-compatible endpoint -------------------------------------------------------------------------------


class ChatHandler(BaseHTTPRequestHandler):
    """Answers every chat request with numbered captions; a description containing "terse" gets one line."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        user = body["messages"][1]["content"]
        content = "Just one." if "terse" in user else \
            f"Here are the captions:\n1. Caption one, seed {body['seed']}.\n2. \"Caption two.\"\n3. Caption three.\n"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_endpoint_rephraser_sends_one_seeded_request_per_clip(chat_server):
    url = f"http://127.0.0.1:{chat_server.server_address[1]}/v1"
    rephraser = EndpointRephraser(ChatEndpoint(url, "tiny-chat", retries=0), temperature=0.5, max_tokens=300)
    captions = rephraser.rephrase(["A choir sings.", "A terse guitar riff."], [CHORALE, ROCK], 2, seed=10)
    assert captions == [["Caption one, seed 10.", "Caption two."], ["Just one."]]
    first, second = chat_server.requests
    assert (first["seed"], second["seed"]) == (10, 11)
    assert first["model"] == "tiny-chat" and first["temperature"] == 0.5 and first["max_tokens"] == 300
    assert first["messages"] == rephrase_messages(REPHRASE_TEMPLATE, "A choir sings.", CHORALE, 2)
    assert CHORALE.summary() in first["messages"][1]["content"]
    provenance = rephraser.provenance()
    assert provenance["rephraser"] == "endpoint" and provenance["model"] == "tiny-chat"
    assert provenance["endpoint"] == url + "/chat/completions" and provenance["template"] == "rephrase-v1"


# --- the template fallback ---------------------------------------------------------------------------------------


def test_template_rephraser_fills_the_patterns_from_the_tags():
    captions, = TemplateRephraser().rephrase([""], [CHORALE], num_captions=len(PATTERNS), seed=0)
    assert "A baroque chorale in F major at 99 bpm for choir aahs, viola and bassoon." in captions
    assert len(captions) == len(PATTERNS) == len(set(captions))
    kept, dropped = filter_captions(captions, CHORALE, REPHRASE_TEMPLATE)
    assert kept == captions and not dropped
    assert all("choir aahs" in caption.casefold() and "99 bpm" in caption for caption in captions)


def test_template_rephraser_is_byte_identical_for_a_seed_and_varies_with_it():
    rephraser = TemplateRephraser()
    first = rephraser.rephrase(["", ""], [CHORALE, ROCK], num_captions=3, seed=5)
    assert rephraser.rephrase(["", ""], [CHORALE, ROCK], num_captions=3, seed=5) == first
    assert all(len(clip) == 3 for clip in first)
    draws = {tuple(rephraser.rephrase([""], [CHORALE], num_captions=3, seed=seed)[0]) for seed in range(8)}
    assert len(draws) > 1
    # clip i is drawn with seed + i
    assert rephraser.rephrase([""], [ROCK], num_captions=3, seed=6)[0] == first[1]
    assert all("128 bpm" in caption and "drums" in caption for caption in first[1])   # 128.4 bpm, rounded


def test_template_rephraser_keeps_a_description_sentence_only_when_it_agrees_with_the_tags():
    agreeing = "A choir sings a slow hymn over viola. Then the bassoon enters."
    contradicting = "A solo piano piece in D minor. Very calm."
    captions = TemplateRephraser().rephrase([agreeing, contradicting], [CHORALE, CHORALE], 3, seed=0)
    assert captions[0][0] == "A choir sings a slow hymn over viola."
    assert not any("piano" in caption for caption in captions[1])
    assert len(captions[1]) == 3


def test_template_rephraser_gives_nothing_when_nothing_is_known():
    assert TemplateRephraser().rephrase([""], [Tags()], 3, seed=0) == [[]]
    assert TemplateRephraser().rephrase(["A calm piece."], [Tags()], 3, seed=0) == [["A calm piece."]]


# --- the factory -------------------------------------------------------------------------------------------------


def test_make_rephraser_picks_model_endpoint_or_fallback(tiny_chat_model_dir):
    fallback = make_rephraser()
    assert isinstance(fallback, TemplateRephraser)
    assert fallback.provenance()["rephraser"] == "template"
    assert fallback.provenance()["template"] == "caption-patterns-v1"
    endpoint = make_rephraser(endpoint="http://127.0.0.1:9/v1", endpoint_model="tiny-chat")
    assert isinstance(endpoint, EndpointRephraser) and endpoint.endpoint.model == "tiny-chat"
    local = make_rephraser(model=tiny_chat_model_dir, temperature=0.0)
    assert isinstance(local, TransformersRephraser) and local.provenance()["generation"]["do_sample"] is False
    with pytest.raises(ConfigError, match="pass one of them"):
        make_rephraser(model="x", endpoint="http://127.0.0.1:9/v1", endpoint_model="m")
    with pytest.raises(ConfigError, match="needs an endpoint URL"):
        make_rephraser(endpoint_model="m")
    with pytest.raises(ConfigError, match="model name"):
        make_rephraser(endpoint="http://127.0.0.1:9/v1")
