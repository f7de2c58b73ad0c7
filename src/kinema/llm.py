"""Language models Kinema talks to: re-captioning clips and expanding short prompts, as the report does.

    chat = connect("openai:http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-3B-Instruct")
    chat = connect("hf:models/qwen2.5-vl")            # a local transformers folder, loaded here
    reply = chat([system("Describe clips."), user("Describe these frames.", images=[f0, f1])], max_tokens=300)
    caption = expand_prompt(chat, "a red ball", style)  # style: load_style(model folder, kind)

A SPEC names the model:
    openai:URL   any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, Ollama,
                 `transformers serve`, a hosted API). URL is the API root, e.g. http://127.0.0.1:8000/v1.
                 The model name comes from `model=` (the CLI's --llm-model) or KINEMA_LLM_MODEL, else
                 the one model the server lists; the API key from `api_key=` or KINEMA_LLM_API_KEY or
                 OPENAI_API_KEY (local servers take any).
    hf:DIR       a transformers model folder (a vision-language model for captions; a text model is
                 enough for prompt expansion), loaded on this machine with transformers.

Images go to the model as they are sent to every OpenAI-compatible server: JPEG data URLs in
"image_url" content parts. Transient failures (no connection, a timeout, HTTP 408/409/429/5xx) are
retried with exponential back-off; what still fails is an `LLMError` that says what happened. An
answer is checked: empty, over-long or refused answers are errors too, never used as captions.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from kinema.errors import KinemaError

SPEC_FORMS = "openai:URL (an OpenAI-compatible server) or hf:DIR (a local transformers folder)"
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
MAX_BACKOFF = 8.0  # seconds between two tries at most
STYLE_FILE = "expand.json"  # a model folder's instruction and example captions for prompt expansion


class LLMError(KinemaError):
    """A language model that could not be reached, or whose answer cannot be used; says which."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop", "length", ...
    prompt_tokens: int | None  # what the model read, images included (None if the server does not say)
    model: str


class Chat(Protocol):
    """A chat model: OpenAI-format messages in, one `Reply` out."""

    name: str

    def __call__(self, messages: list[dict], *, max_tokens: int) -> Reply: ...


# ---------------------------------------------------------------- messages


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def user(text: str, images: list[np.ndarray] | None = None, quality: int = 90) -> dict:
    """A user turn: the images (uint8 (H, W, 3) frames) first, as JPEG data URLs, then the text."""
    parts = [{"type": "image_url", "image_url": {"url": image_url(im, quality)}} for im in images or ()]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}] if parts else text}


def image_url(frame: np.ndarray, quality: int = 90) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def count_images(messages: list[dict]) -> int:
    return sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url")


# ---------------------------------------------------------------- connecting


def parse_spec(spec: str) -> tuple[str, str]:
    """'openai:URL' -> ("openai", URL); 'hf:DIR' -> ("hf", DIR); anything else is an error."""
    kind, sep, target = str(spec).partition(":")
    if not sep or kind not in ("openai", "hf") or not target.strip():
        raise LLMError(f"a language model is named {SPEC_FORMS}; got {spec!r}")
    if kind == "openai" and not target.startswith(("http://", "https://")):
        raise LLMError(f"openai:URL takes an http(s) URL, e.g. openai:http://127.0.0.1:8000/v1; got {spec!r}")
    return kind, target.strip()


def connect(spec: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
            retries: int = 2) -> Chat:  # fmt: skip
    """The chat model a SPEC names (see the module doc). timeout: seconds one request may take;
    retries: further tries of a request that failed for a transient reason."""
    kind, target = parse_spec(spec)
    if timeout <= 0 or retries < 0:
        raise LLMError(f"timeout must be > 0 and retries >= 0; got {timeout}, {retries}")
    if kind == "openai":
        return OpenAIChat(target, model=model, api_key=api_key, timeout=timeout, retries=retries)
    return LocalChat(target)


class OpenAIChat:
    """A model behind an OpenAI-compatible chat-completions endpoint (the `openai` client library)."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 2) -> None:  # fmt: skip
        try:
            import openai
        except ImportError:
            raise LLMError("openai:URL needs the openai package: pip install 'kinema[llm]'") from None
        self.url = url.rstrip("/")
        self.timeout, self.retries = float(timeout), int(retries)
        key = api_key or os.environ.get("KINEMA_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        # Kinema retries itself (below), so that a failure names the server and the attempts made
        self.client = openai.OpenAI(base_url=self.url, api_key=key, timeout=self.timeout, max_retries=0)
        self.model = model or os.environ.get("KINEMA_LLM_MODEL") or self._only_model()
        self.name = f"{self.model} at {self.url}"

    def _only_model(self) -> str:
        listed = self._retrying(lambda: [m.id for m in self.client.models.list()], "list its models")
        if len(listed) == 1:
            return listed[0]
        offers = f"it offers {', '.join(listed[:8])}{' ...' if len(listed) > 8 else ''}" if listed else "it lists none"
        raise LLMError(f"name the model to use at {self.url} with --llm-model or KINEMA_LLM_MODEL; {offers}")

    def __call__(self, messages: list[dict], *, max_tokens: int) -> Reply:
        def ask():
            return self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=max_tokens,
                                                       temperature=0.0)  # fmt: skip

        r = self._retrying(ask, "answer")
        if not r.choices:
            raise LLMError(f"{self.name} answered with no choices")
        choice = r.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            raise LLMError(f"{self.name} refused the request: {refusal or 'content filter'}")
        usage = getattr(r, "usage", None)
        return Reply(choice.message.content or "", choice.finish_reason or "stop",
                     getattr(usage, "prompt_tokens", None), self.model)  # fmt: skip

    def _retrying(self, call, doing: str):
        """call(), tried 1 + retries times on transient failures with exponential back-off and jitter."""
        import openai

        for attempt in range(self.retries + 1):
            try:
                return call()
            except openai.APITimeoutError:
                why, transient = f"did not {doing} within {self.timeout:g} s", True
            except openai.APIConnectionError as e:
                why, transient = f"cannot be reached ({_cause(e)}); is the server running?", True
            except openai.APIStatusError as e:
                code = e.status_code
                transient = code in RETRYABLE_STATUS or code >= 500
                why = f"answered HTTP {code}: {_server_message(e)}"
                if code == 404:
                    why += f" (does it serve the model {getattr(self, 'model', '?')!r} at this URL?)"
                elif code in (401, 403):
                    why += " (set KINEMA_LLM_API_KEY or OPENAI_API_KEY)"
                elif code == 400:
                    why = f"refused the request: HTTP 400: {_server_message(e)}"
            except openai.OpenAIError as e:
                why, transient = f"failed: {e}", False
            if not transient or attempt == self.retries:
                tries = f" (after {attempt + 1} tries)" if attempt else ""
                raise LLMError(f"the language model at {self.url} {why}{tries}")
            time.sleep(min(MAX_BACKOFF, 0.5 * 2**attempt) * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    return f"{type(inner).__name__}: {inner}" if inner else str(e)


def _server_message(e) -> str:
    """What the server said: its JSON error message, else the start of its answer's text."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    response = getattr(e, "response", None)
    text = (getattr(response, "text", "") or "").strip()
    return (text or str(getattr(e, "message", "")) or str(e))[:300]


class LocalChat:
    """A transformers model folder loaded on this machine (greedy decoding, one request at a time)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise LLMError(f"hf:{folder}: no config.json there; give a transformers model folder")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
            from transformers import PreTrainedTokenizerBase
        except ImportError:
            raise LLMError("hf:DIR needs transformers: pip install 'kinema[llm]'") from None
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.vision = not isinstance(self.processor, PreTrainedTokenizerBase)
            cls = AutoModelForImageTextToText if self.vision else AutoModelForCausalLM
            device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            self.model = cls.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
        except (OSError, ValueError, KeyError) as e:
            raise LLMError(f"hf:{folder} cannot be loaded with transformers: {e}") from None
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.name = f"hf:{path}"
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict], *, max_tokens: int) -> Reply:
        import torch

        if count_images(messages) and not self.vision:
            raise LLMError(f"{self.name} is a text-only model; captioning frames needs a vision-language model")
        msgs = [self._local(m) for m in messages]
        with self._lock, torch.inference_mode():
            try:
                inputs = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                            return_dict=True, return_tensors="pt")  # fmt: skip
            except (ValueError, TypeError, KeyError) as e:  # e.g. a template that has no system role
                raise LLMError(f"{self.name}'s chat template cannot render the request: {e}") from None
            inputs = inputs.to(self.model.device)
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        n = inputs["input_ids"].shape[1]
        new = out[0, n:]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        finish = "stop" if len(new) < max_tokens or int(new[-1]) in eos else "length"
        return Reply(self.tokenizer.decode(new, skip_special_tokens=True), finish, int(n), self.name)

    def _local(self, message: dict) -> dict:
        """An OpenAI-format message as transformers' chat templates take it (images decoded)."""
        content = message["content"]
        if isinstance(content, str):
            return {"role": message["role"], "content": [{"type": "text", "text": content}]}
        parts = []
        for p in content:
            if p["type"] == "image_url":
                from PIL import Image

                data = base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                parts.append({"type": "image", "image": Image.open(io.BytesIO(data)).convert("RGB")})
            else:
                parts.append({"type": "text", "text": p["text"]})
        return {"role": message["role"], "content": parts}


def check_answer(reply: Reply, max_chars: int, what: str = "caption") -> str:
    """The reply's text, stripped; an empty or over-long answer is an `LLMError`."""
    text = reply.text.strip()
    if not text:
        raise LLMError(f"{reply.model} answered with an empty {what}")
    if len(text) > max_chars:
        raise LLMError(f"{reply.model} answered with an over-long {what}: {len(text)} characters, the limit is "
                       f"{max_chars} (raise the character limit, or lower the token limit)")  # fmt: skip
    return text


# ---------------------------------------------------------------- prompt expansion


@dataclass(frozen=True)
class Style:
    """How a model's captions read: an instruction and example (short prompt, caption) pairs,
    sent as a system turn and as earlier turns of the chat, so the answer follows them."""

    instruction: str
    examples: tuple[tuple[str, str], ...] = ()
    max_tokens: int = 400
    max_chars: int = 2000
    source: str = field(default="", compare=False)


def read_style(path) -> Style:
    """A style file (a path, or a package resource): {"instruction": str, "examples": [{"prompt",
    "caption"}, ...], "max_tokens", "max_chars"}."""
    try:
        doc = json.loads((Path(path) if isinstance(path, str) else path).read_text(encoding="utf-8"))
        examples = tuple((str(e["prompt"]), str(e["caption"])) for e in doc.get("examples", ()))
        style = Style(str(doc["instruction"]), examples, int(doc.get("max_tokens", 400)),
                      int(doc.get("max_chars", 2000)), str(path))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KinemaError(f"{path} is not a prompt-expansion style file ({type(e).__name__}: {e})") from None
    if not style.instruction.strip() or style.max_tokens < 1 or style.max_chars < 1:
        raise KinemaError(f"{path}: the instruction must not be empty and the limits must be positive")
    return style


def default_style(kind: str) -> Style:
    """The style Kinema ships for a kind of model without its own expand.json: "wan" or any other."""
    name = "expand_wan.json" if kind == "wan" else "expand.json"
    return read_style(resources.files("kinema") / "prompts" / name)


def load_style(folder: str | os.PathLike | None, kind: str = "kinema") -> Style:
    """The model folder's own expand.json when it has one, else the default for its kind."""
    if folder is not None and (Path(folder) / STYLE_FILE).is_file():
        return read_style(Path(folder) / STYLE_FILE)
    return default_style(kind)


def expansion_messages(prompt: str, style: Style) -> list[dict]:
    turns = [system(style.instruction)]
    for short, caption in style.examples:
        turns += [user(short), assistant(caption)]
    return [*turns, user(prompt)]


def expand_prompt(chat: Chat, prompt: str, style: Style) -> str:
    """A short prompt as a caption in the style of the model's training captions."""
    if not prompt.strip():
        raise KinemaError("the prompt is empty; say what to show")
    reply = chat(expansion_messages(prompt, style), max_tokens=style.max_tokens)
    return check_answer(reply, style.max_chars, "expanded prompt")
