"""Small randomly initialised language models, saved as transformers folders, and a real
OpenAI-compatible server (`transformers serve`) for them: what the captioning and prompt-expansion
tests talk to.

Their answers are gibberish over a few dozen words; the tests check the plumbing, not the prose.
    text/   a 2-layer Llama (a text model, for prompt expansion)
    vlm/    a LLaVA: a 2-layer CLIP vision tower on 32x32 images (16 tokens an image) and that Llama
    mute/   the same LLaVA forbidden every word: it answers with nothing (an empty caption)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("a the red green blue yellow ball square falls bounces rolls slides on grass sky camera pans left right "
         "slowly light bright soft shadow in of and with is moves stone mountains").split()  # fmt: skip
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>", "<image>"]
TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<image>' }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '</s>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
IMAGE_SIDE, PATCH = 32, 8
TOKENS_PER_IMAGE = (IMAGE_SIDE // PATCH) ** 2  # the "default" feature strategy drops the CLS token


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIAL + list(WORDS))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins the words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=SPECIAL[4:])  # fmt: skip
    fast.chat_template = TEMPLATE
    return fast


def _llama(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)  # fmt: skip


def _generation(tok, **extra):
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                            min_new_tokens=4, max_new_tokens=32, do_sample=False, **extra)  # fmt: skip


def make_models(root: Path) -> dict[str, Path]:
    """Write text/, vlm/ and mute/ under root (seeded: the same weights every time)."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaForCausalLM, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)  # fmt: skip

    tok = _tokenizer()
    torch.manual_seed(0)
    text = LlamaForCausalLM(_llama(tok))
    text.generation_config = _generation(tok)
    text.save_pretrained(root / "text")
    tok.save_pretrained(root / "text")

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIDE, patch_size=PATCH)  # fmt: skip
    cfg = LlavaConfig(vision_config=vision, text_config=_llama(tok), image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1)  # fmt: skip
    vlm = LlavaForConditionalGeneration(cfg)
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=PATCH, chat_template=TEMPLATE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    words = [i for t, i in tok.get_vocab().items() if t not in SPECIAL]
    for name, gen in (("vlm", _generation(tok)), ("mute", _generation(tok, bad_words_ids=[[i] for i in words]))):
        vlm.generation_config = gen
        vlm.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return {name: root / name for name in ("text", "vlm", "mute")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve` on 127.0.0.1 (offline), started and stopped by a test fixture."""

    def __init__(self, log: Path, start_timeout: float = 180.0):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        exe = Path(sys.executable).with_name("transformers")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not start within {start_timeout} s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
