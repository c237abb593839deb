"""A client for OpenAI-compatible chat-completion endpoints (OpenAI, vLLM, llama.cpp, Ollama, LM Studio).

Used by ``describe`` (audio in the message as ``input_audio``) and ``rephrase`` (text only). Errors are never
swallowed: a refused request, a server error after the retries, or a reply without the expected choices is an
:class:`~discodiff.errors.EndpointError` naming the URL, the status and the server's first line, so a caption run
stops where it failed and resumes from its cache once the cause is fixed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np

from ..errors import ConfigError, EndpointError, first_line

API_KEY_ENV = "OPENAI_API_KEY"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def chat_url(url: str) -> str:
    """``…/v1`` or ``…/v1/chat/completions`` → the chat-completions URL; anything not http(s) is refused."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint URL must start with http:// or https://, got {url!r} "
                          "(e.g. http://127.0.0.1:8000/v1)")
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def audio_content(audio: np.ndarray, sample_rate: int) -> dict:
    """A mono clip ``[T]`` as an ``input_audio`` message part (16-bit WAV, base64)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode("ascii"),
                                                   "format": "wav"}}


class ChatEndpoint:
    """``complete(messages, …) -> [text, …]`` against ``url`` serving ``model``.

    The API key comes from ``api_key`` or ``$OPENAI_API_KEY`` (local servers need none). Statuses 408/409/429/5xx
    and connection failures are retried ``retries`` times with exponential backoff from ``backoff`` seconds.
    """

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 3,
                 backoff: float = 1.0):
        if not model:
            raise ConfigError("an endpoint needs a model name (--endpoint-model), e.g. gpt-4o-audio-preview")
        self.url, self.model = chat_url(url), model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def provenance(self) -> dict:
        """What a row records about the model that made it (never the key)."""
        return {"model": self.model, "endpoint": self.url}

    def complete(self, messages: list[dict], *, temperature: float = 0.0, seed: int | None = None,
                 max_tokens: int = 256, n: int = 1) -> list[str]:
        """The ``n`` reply texts for one conversation."""
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
                "n": n}
        if seed is not None:
            body["seed"] = seed
        reply = self._post(body)
        try:
            texts = [choice["message"]["content"] for choice in reply["choices"]]
        except (KeyError, TypeError) as err:
            raise EndpointError(f"{self.url} answered without choices[].message.content "
                                f"({first_line(err)}): is it an OpenAI-compatible chat endpoint?") from err
        if len(texts) != n or not all(isinstance(text, str) for text in texts):
            raise EndpointError(f"{self.url} returned {len(texts)} text choices for n={n}; "
                                "use a server that supports n, or ask for one phrasing at a time")
        return [text.strip() for text in texts]

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace").strip().splitlines()
                problem = f"HTTP {err.code}: {detail[0][:200] if detail else err.reason}"
                if err.code not in RETRY_STATUSES:
                    raise EndpointError(f"{self.url} refused the request ({problem}); check the model name, "
                                        f"the key (${API_KEY_ENV}) and the request size") from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                problem = first_line(err)
            except json.JSONDecodeError as err:
                raise EndpointError(f"{self.url} answered something that is not JSON ({first_line(err)})") from err
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
        raise EndpointError(f"{self.url} failed {self.retries + 1} times (last: {problem}); is the server up? "
                            "the run resumes from its cache when rerun")
