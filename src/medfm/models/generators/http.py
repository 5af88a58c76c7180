"""An OpenAI-compatible chat server (vLLM, llama.cpp, TGI, Ollama, ...) behind ``generate``.

POSTs ``{base_url}/v1/chat/completions`` with ``{"model", "messages", "max_tokens",
"temperature", "top_p", "seed"}``; images go as ``data:image/png;base64`` URLs in
``image_url`` parts. Each attempt is bounded by ``timeout_s`` (connect, read, write); 5xx,
429, connection errors and timeouts are retried ``max_retries`` times with exponential backoff
(``backoff_s * 2**attempt``), so a silent server fails with a ``MedfmError`` after at most
``(max_retries + 1) * timeout_s`` plus the backoffs. Card ``config``: ``base_url``,
``model`` (the server's model name), ``timeout_s``, ``max_retries``, ``backoff_s``,
``accepts_images``, ``system_prompt``, ``api_key_env`` (name of an environment variable
holding a bearer token; the token itself never sits in a card).
"""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path
from typing import Any

from medfm._optional import optional_import
from medfm.errors import ConfigError, InputError, MedfmError
from medfm.models.base import ModelAdapter, cannot_save
from medfm.models.card import ModelCard
from medfm.models.generators._base import GeneratorAdapter, generation_options, to_pil

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def chat_url(base_url: str) -> str:
    """``http://host:port`` or ``.../v1`` -> the chat-completions endpoint."""
    base = base_url.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def _png_data_url(image: Any, where: str) -> str:
    buf = io.BytesIO()
    to_pil(image, where).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIChatGenerator(GeneratorAdapter):
    """Client for one model on an OpenAI-compatible server (no weights held locally)."""

    def __init__(
        self,
        card: ModelCard,
        device: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        backoff_s: float | None = None,
    ) -> None:
        super().__init__(card, device or "cpu")
        cfg = card.config
        self.base_url = base_url or cfg.get("base_url") or card.source
        if not self.base_url or not str(self.base_url).startswith(("http://", "https://")):
            raise ConfigError(f"model '{card.id}': base_url must be an http(s) URL, got {self.base_url!r}")
        self.model_name = model or cfg.get("model")
        if not self.model_name:
            raise ConfigError(f"model '{card.id}': the server's model name is not set (config 'model')")
        self.timeout_s = float(timeout_s if timeout_s is not None else cfg.get("timeout_s", 60.0))
        self.max_retries = int(max_retries if max_retries is not None else cfg.get("max_retries", 2))
        self.backoff_s = float(backoff_s if backoff_s is not None else cfg.get("backoff_s", 0.5))
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ConfigError(f"model '{card.id}': timeout_s must be > 0, max_retries and backoff_s >= 0")
        self.accepts_images = bool(cfg.get("accepts_images", False))
        self.context_length = card.context_length
        self.url = chat_url(str(self.base_url))
        self.weights_source = self.url
        self.attempts = 0  # attempts made by the last generate() call

    def _payload(self, prompt: str, images: list[Any], opts: Any) -> dict[str, Any]:
        system = self.card.config.get("system_prompt")
        if images:
            content: Any = [{"type": "image_url", "image_url": {"url": _png_data_url(im, f"image {i}")}} for i, im in enumerate(images)]
            content.append({"type": "text", "text": prompt})
        else:
            content = prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        return {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": opts.max_new_tokens,
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "seed": opts.seed,
        }

    def _headers(self) -> dict[str, str]:
        env = self.card.config.get("api_key_env")
        token = os.environ.get(env) if env else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def generate(self, prompt: str, images: list[Any] | None = None, **kwargs: Any) -> str:
        """Send one chat request; return the first choice's message text."""
        httpx = optional_import("httpx")
        opts = generation_options(self.card, kwargs)
        images = self._check_images(images)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"model '{self.card.id}': empty prompt")
        payload = self._payload(prompt, images, opts)
        last = "no attempt"
        self.attempts = 0
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s), headers=self._headers()) as client:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                self.attempts += 1
                try:
                    resp = client.post(self.url, json=payload)
                except httpx.TimeoutException:
                    last = f"no answer within {self.timeout_s:g} s"
                    continue
                except httpx.TransportError as exc:
                    last = f"connection failed ({type(exc).__name__}: {exc})"
                    continue
                if resp.status_code in RETRY_STATUS:
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    continue
                if resp.status_code >= 400:
                    raise MedfmError(f"{self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
                return self._parse(resp)
        raise MedfmError(f"{self.url}: request failed after {self.attempts} attempt(s): {last}")

    def _parse(self, resp: Any) -> str:
        try:
            doc = resp.json()
            content = doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise MedfmError(f"{self.url}: not an OpenAI chat-completions answer ({exc}): {resp.text[:200]}") from exc
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content or "").strip()


FOLDER_FILE: str | None = None


def build(card: ModelCard, folder: Any, weights: Any, device: str, **options: Any) -> OpenAIChatGenerator:
    """The zoo's backend contract; ``options``: ``base_url``, ``model``, ``timeout_s``,
    ``max_retries``, ``backoff_s``. A served model takes no weights path."""
    if weights is not None:
        raise ConfigError(f"model '{card.id}' is served over HTTP; it takes base_url, not a weights path")
    return OpenAIChatGenerator(card, device=device, **options)


def save(adapter: ModelAdapter, folder: Path) -> None:
    """Generators are used as downloaded; medfm does not re-save them."""
    raise cannot_save(adapter.card, "a generator")


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    raise cannot_save(card, "a generator")
