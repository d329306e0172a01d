"""Generative transformers backends: a BLIP captioner and chat-template VLMs.

Both produce raw text in batches; `vlens.vlm.structured.ask_structured` turns text into
schema-validated answers with the same repair loop as every other backend. A captioner
cannot follow instructions, so it only answers prompts whose schema is a single text field
(the `describe` prompt): other prompts give an honest `unsupported_prompt` error row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from vlens.vlm.base import GENERATIVE, AskResult
from vlens.vlm.hf import HFBase
from vlens.vlm.prompting import Prompt, load_prompt
from vlens.vlm.structured import Generation, Request, ask_structured


class _Generative(HFBase):
    capabilities = frozenset({GENERATIVE})
    model_class = "AutoModelForImageTextToText"

    def __init__(self, *a: Any, max_new_tokens: int | None = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        import transformers

        self.max_new_tokens = max_new_tokens
        self.processor = transformers.AutoProcessor.from_pretrained(self.path)
        cls = getattr(transformers, self.model_class)
        self.model = cls.from_pretrained(self.path, **self._load_kwargs())
        self.model.to(self.device).eval()

    def _prompt(self, prompt: Prompt | str) -> Prompt:
        return load_prompt(prompt, self.prompt_dir) if isinstance(prompt, str) else prompt

    def _inputs(self, batch: Sequence[Request]) -> dict[str, Any]:
        raise NotImplementedError

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Greedy generation in batches of `batch_size`; a failing batch becomes error rows."""
        import torch

        out: list[Generation] = []
        for i in range(0, len(requests), self.batch_size):
            batch = requests[i : i + self.batch_size]
            try:
                inp = self._inputs(batch)
                n_in = inp["input_ids"].shape[1] if self.strip_prompt else 0
                new = self.max_new_tokens or max(r.max_tokens for r in batch)
                inp = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inp.items()}
                if "pixel_values" in inp and self.dtype is not None:
                    inp["pixel_values"] = inp["pixel_values"].to(self.dtype)
                with torch.inference_mode():
                    ids = self.model.generate(**inp, max_new_tokens=new, do_sample=False)
                gen = ids[:, n_in:]
                texts = self.processor.batch_decode(gen, skip_special_tokens=True)
                prompt_tokens = int(inp["input_ids"].shape[1]) if "input_ids" in inp else 0
                for t, row in zip(texts, gen, strict=True):
                    out.append(Generation(text=t.strip(), usage={
                        "prompt_tokens": prompt_tokens, "completion_tokens": int(row.numel())}))
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the run
                out.extend(Generation(error=f"generation_failed: {type(e).__name__}: {e}",
                                      final=True) for _ in batch)
        return out

    strip_prompt = True


class HFCaptioner(_Generative):
    """BLIP-style captioner (`BlipForConditionalGeneration`): unconditional captions."""

    family = "captioner"
    model_class = "BlipForConditionalGeneration"
    strip_prompt = False

    def _inputs(self, batch: Sequence[Request]) -> dict[str, Any]:
        return dict(self.processor(images=[r.image.convert("RGB") for r in batch],
                                   return_tensors="pt"))

    def caption(self, images: Sequence[Image.Image], max_new_tokens: int = 30) -> list[str]:
        reqs = [Request(im, [], max_new_tokens) for im in images]
        return [g.text for g in self.generate(reqs)]

    def ask(self, images: Sequence[Image.Image], prompt: Prompt | str,
            variables: Sequence[dict[str, Any]] | None = None) -> list[AskResult]:
        prompt = self._prompt(prompt)
        fields = prompt.schema.model_fields
        if len(fields) != 1 or next(iter(fields.values())).annotation is not str:
            msg = (f"unsupported_prompt: captioner {self.name} can only answer single-text "
                   f"prompts such as 'describe', not {prompt.key}")
            return [AskResult(None, error=msg) for _ in images]
        field = next(iter(fields))

        def wrap(reqs: Sequence[Request]) -> list[Generation]:
            gens = self.generate(reqs)
            for g in gens:  # the caption itself is the answer's single field
                if g.error is None:
                    import json

                    g.text = json.dumps({field: g.text})
            return gens

        return ask_structured(wrap, images, prompt, variables, max_attempts=1)


class HFChat(_Generative):
    """Chat VLMs through the processor's chat template (LLaVA, Qwen2-VL, SmolVLM, ...)."""

    family = "chat"

    def _messages(self, r: Request) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = []
        image_done = False
        for m in r.messages:
            content: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}]
            if m["role"] == "user" and not image_done:
                content.insert(0, {"type": "image"})
                image_done = True
            msgs.append({"role": m["role"], "content": content})
        return msgs

    def _inputs(self, batch: Sequence[Request]) -> dict[str, Any]:
        texts = [self.processor.apply_chat_template(self._messages(r), add_generation_prompt=True,
                                                    tokenize=False) for r in batch]
        self.processor.tokenizer.padding_side = "left"  # generation continues on the right
        # one image list per sample: the nested form every chat processor accepts
        # (SmolVLM/Idefics3 require it; LLaVA and Qwen2-VL flatten it)
        return dict(self.processor(images=[[r.image.convert("RGB")] for r in batch],
                                   text=texts, padding=True, return_tensors="pt"))

    def ask(self, images: Sequence[Image.Image], prompt: Prompt | str,
            variables: Sequence[dict[str, Any]] | None = None) -> list[AskResult]:
        return ask_structured(self.generate, images, self._prompt(prompt), variables,
                              self.max_attempts)
