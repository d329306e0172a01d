"""`openai:<model>[@<base_url>]`: any server speaking OpenAI chat completions with images.

Works with vLLM, Ollama, LM Studio, OpenAI... Images go as base64 PNG data URLs. Requests run
on a bounded thread pool sharing one `httpx.Client`; 429/5xx/timeouts/connection errors are
retried with exponential backoff and jitter, honouring `Retry-After`. A per-run budget
(requests and/or tokens) stops cleanly: items it refuses become `budget_exceeded` rows, so a
later run with a fresh budget resumes them. The API key lives only in the request header:
never in repr, fingerprints, logs or error rows. httpx is used instead of the `openai`
package to keep the dependency small and the retry policy ours.
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
from PIL import Image

from vlens.errors import CapabilityError, ConfigError
from vlens.vlm.base import GENERATIVE, VLMS, AskResult
from vlens.vlm.prompting import Prompt, load_prompt, prompt_set_key
from vlens.vlm.structured import Generation, Request, ask_structured

BASE_URL_ENV = ("VLENS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENV = ("VLENS_OPENAI_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _Secret:
    """Holds the API key; prints as *** so it cannot leak through repr or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "***" if self._value else "None"

    __str__ = __repr__


class Budget:
    """Thread-safe per-run limits on requests sent and tokens used (None = unlimited)."""

    def __init__(self, max_requests: int | None = None, max_tokens: int | None = None) -> None:
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.requests = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Reserve one request; False once a limit is reached."""
        with self._lock:
            if self.exhausted:
                return False
            self.requests += 1
            return True

    def spend(self, tokens: int) -> None:
        with self._lock:
            self.tokens += max(0, int(tokens))

    @property
    def exhausted(self) -> bool:
        if self.max_requests is not None and self.requests >= self.max_requests:
            return True
        return self.max_tokens is not None and self.tokens >= self.max_tokens


def encode_image(image: Image.Image, max_side: int | None = None) -> str:
    """A `data:image/png;base64,...` URL for `image`, downscaled to `max_side` if larger.

    PNG (lossless) keeps the black of masked views exactly black."""
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatVLM:
    """Generative-only backend for OpenAI-compatible chat-completions servers."""

    capabilities = frozenset({GENERATIVE})

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_requests: int | None = None,
        max_tokens: int | None = None,
        max_attempts: int = 3,
        temperature: float = 0.0,
        prompt_dir: str | None = None,
        seed: int | None = None,
        max_image_side: int | None = 1024,
    ) -> None:
        if not model:
            raise ConfigError("openai backend needs a model: openai:<model>[@<base_url>]")
        self.model = model
        self.base_url = (
            base_url or next((os.environ[k] for k in BASE_URL_ENV if os.environ.get(k)), None)
            or DEFAULT_BASE_URL
        ).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"openai base URL must start with http:// or https://: "
                              f"{self.base_url!r}")
        self._key = _Secret(
            api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        )
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.prompt_dir = prompt_dir
        self.max_image_side = max_image_side
        self.budget = Budget(max_requests, max_tokens)
        self.stats = {"requests": 0, "retries": 0, "waits": []}
        self._stats_lock = threading.Lock()
        self._rng = random.Random(seed)
        self.name = f"openai:{model}"
        self.fingerprint = f"openai:{model}@{self.base_url}|prompts:{prompt_set_key(prompt_dir)}"
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatVLM(model={self.model!r}, base_url={self.base_url!r}, api_key=***)"

    # -- transport -------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.concurrency,
                                  max_keepalive_connections=self.concurrency)
            self._client = httpx.Client(timeout=self.timeout, limits=limits)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = self._key.get()
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _payload(self, req: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        image_done = False
        for m in req.messages:
            if m["role"] == "user" and not image_done:
                url = encode_image(req.image, self.max_image_side)
                content = [
                    {"type": "text", "text": m["content"]},
                    {"type": "image_url", "image_url": {"url": url}},
                ]
                messages.append({"role": "user", "content": content})
                image_done = True
            else:
                messages.append(dict(m))
        return {"model": self.model, "messages": messages, "max_tokens": req.max_tokens,
                "temperature": self.temperature}

    def _sleep_for(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.max_backoff, self.backoff * (2**retry))
        return base * (0.5 + self._rng.random())  # jitter in [0.5, 1.5) x base

    def _count(self, key: str, wait: float | None = None) -> None:
        with self._stats_lock:
            self.stats[key] += 1
            if wait is not None:
                self.stats["waits"].append(wait)

    def _post(self, req: Request) -> Generation:
        """One chat completion with retries; never raises."""
        payload = self._payload(req)
        url = f"{self.base_url}/chat/completions"
        last = "unknown_error"
        raw = ""
        for retry in range(self.max_retries + 1):
            if not self.budget.take():
                return Generation(error="budget_exceeded", final=True)
            self._count("requests")
            retry_after: float | None = None
            try:
                r = self.client.post(url, json=payload, headers=self._headers())
            except httpx.TimeoutException:
                last = "timeout"
            except httpx.TransportError as e:
                last = f"connection_error: {type(e).__name__}"
            else:
                raw = r.text
                if r.status_code == 200:
                    try:
                        data = r.json()
                        text = data["choices"][0]["message"]["content"] or ""
                        usage = {k: int(v) for k, v in (data.get("usage") or {}).items()
                                 if isinstance(v, int)}
                    except (ValueError, KeyError, IndexError, TypeError):
                        last = "bad_response: not a chat completion"
                    else:
                        self.budget.spend(usage.get("total_tokens", 0))
                        return Generation(text=text, usage=usage)
                elif r.status_code in RETRY_STATUS:
                    last = f"http_{r.status_code}"
                    retry_after = parse_retry_after(r.headers.get("retry-after"))
                else:  # 4xx other than the above: retrying will not help
                    return Generation(text=raw[:2000], error=f"http_{r.status_code}", final=True)
            if retry < self.max_retries:
                wait = self._sleep_for(retry, retry_after)
                self._count("retries", wait)
                log.info("%s: %s, retry %d/%d in %.2fs", self.name, last, retry + 1,
                         self.max_retries, wait)
                time.sleep(wait)
        return Generation(text=raw[:2000], error=f"{last} (after {self.max_retries + 1} tries)",
                          final=True)

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Raw generations for `requests`, up to `concurrency` in flight at once."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._post, requests))

    # -- VLM protocol ----------------------------------------------------------------------
    def ask(
        self,
        images: Sequence[Image.Image],
        prompt: Prompt | str,
        variables: Sequence[dict[str, Any]] | None = None,
    ) -> list[AskResult]:
        if isinstance(prompt, str):
            prompt = load_prompt(prompt, self.prompt_dir)
        return ask_structured(self.generate, images, prompt, variables, self.max_attempts)

    def _no_contrastive(self, *_: Any) -> np.ndarray:
        raise CapabilityError(
            f"VLM {self.name!r} is not contrastive (it offers: generative): chat-completions "
            "servers give no embeddings; use embedded or hf:<clip/siglip> for concept scores"
        )

    embed_images = embed_texts = score = _no_contrastive


@VLMS.register("openai", help="OpenAI-compatible chat completions: openai:<model>[@<base_url>]")
def _create(arg: str = "", **kw: Any) -> OpenAICompatVLM:
    model, base_url = arg, kw.pop("base_url", None)
    if "@" in arg:
        head, _, tail = arg.rpartition("@")
        if tail.startswith(("http://", "https://")):
            model, base_url = head, base_url or tail
    return OpenAICompatVLM(model, base_url, **kw)
