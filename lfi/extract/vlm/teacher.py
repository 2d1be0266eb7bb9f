"""The VLM teacher: C_fore and C_back from a VLM's answer-to-image attention (paper Eq. 10-12).

One teacher-forced forward per batch: the chat template renders the task prompt (Sec. 4.2) and the answer
``{foreground: [class], background: [w1, ...]}`` (dense: ``{objects: [o1, ..., oK], background: [...]}``,
with the K boxes drawn on the image). For the chosen decoder layers, the attention of the answer tokens of
each foreground entry and of the background words to the image tokens is captured
(`capture.AttentionCapture`),
averaged over layers, heads and the entry's tokens, mapped back onto the original image by the model's
family (`families.FAMILIES`: LLaVA-1.5, LLaVA-NeXT, Qwen2(.5)-VL, Idefics3, SmolVLM, PaliGemma) and
L1-normalised per entry. fore = sum over entries (K = 1 for classification; Eq. 12), back = the background
words' map. Eq. 11/12 itself is applied by
the extraction loop (`lfi.extract.teacher.apply_contrast`).

Why per-entry normalisation: LLaVA puts most attention on the first tokens (an attention sink), and how much
of a word's attention reaches the image varies by word; normalising compares *where* fore and back look.

Default layers: layer 14 of LLaVA-1.5-7B's 32 (the same relative depth, 14/32, for other depths), mean over
heads: public work on LLaVA-1.5-7B attention finds the middle layers localise objects best (early layers
attend by position, late layers mostly to sink tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from itertools import chain
from typing import Any, Literal

import torch
import transformers
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from lfi.extract.teacher import Sample, Teacher, TeacherOutput
from lfi.extract.vlm.capture import AttentionCapture, decoder_layers, layers_up_to
from lfi.extract.vlm.families import Family, family_for
from lfi.extract.vlm.geometry import draw_boxes
from lfi.extract.vlm.loader import DEFAULT_CHECKPOINT, load_llava, load_vlm
from lfi.extract.vlm.prompts import (
    DEFAULT_BACKGROUND_WORDS,
    TASKS,
    Answer,
    Task,
    answer_prefix,
    check_word,
    format_answer,
    parse_background,
    task_prompt,
)
from lfi.extract.vlm.tokens import (
    check_image_offsets,
    image_columns,
    locate,
    pad_rows,
    token_rows,
)

BackgroundMode = Literal["fixed", "generate"]


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Layer 14 for LLaVA-1.5-7B's 32 decoder layers; the same relative depth for other depths."""
    return (num_layers * 14 // 32,)


class VLMTeacher(Teacher):
    """C_fore / C_back from a Hugging Face VLM of a known family (`families.FAMILIES`) + its processor.

    model: loaded with ``attn_implementation="lfi_capture"`` (see `load_vlm`). family: default from
    ``model.config.model_type``. grid: the stored map's (h, w), spanning the original image (default: the
    family's, e.g. LLaVA's vision token grid). task: "classification"
    (uses sample["class_name"]) or "dense" (sample["boxes"] (K, 4) XYXY pixels, drawn on the image, and
    optional sample["box_names"], K names, else class_name for every box).
    layers / heads: decoder layers and heads averaged (None: `default_layers`, all heads).
    background_mode: "fixed" teacher-forces `background_words`; "generate" lets the VLM write the background
    list after the forced foreground part (greedy, at most `max_new_tokens`), then teacher-forces the whole
    answer. If it writes no usable word, `background_words` are used and the image's info says so.
    cut_layers: run only the decoder layers up to the last captured one (exact; see `layers_up_to`).
    checkpoint / revision: recorded in `metadata`.
    """

    name = "hf"

    def __init__(
        self,
        model: transformers.PreTrainedModel,
        processor: transformers.ProcessorMixin,
        *,
        family: Family | None = None,
        grid: Sequence[int] | None = None,
        task: Task = "classification",
        layers: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        background_words: Sequence[str] = DEFAULT_BACKGROUND_WORDS,
        background_mode: BackgroundMode = "fixed",
        max_background_words: int = 5,
        max_new_tokens: int = 24,
        cut_layers: bool = True,
        checkpoint: str | None = None,
        revision: str | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if background_mode not in ("fixed", "generate"):
            raise ValueError(f"background_mode must be 'fixed' or 'generate', got {background_mode!r}")
        if not getattr(processor.tokenizer, "is_fast", False):
            raise ValueError(
                "the processor's tokenizer must be a fast tokenizer (offsets locate the answer words)"
            )
        self.family = family if family is not None else family_for(model.config)
        self.family.check(model, processor)
        if background_mode == "generate" and not self.family.generates:
            raise ValueError(
                f"background_mode 'generate' is not supported for {self.family.name}; use 'fixed'"
            )
        if grid is not None and (len(grid) != 2 or min(grid) < 1):
            raise ValueError(f"grid must be (h, w) positive integers, got {grid}")
        self.grid = tuple(grid) if grid is not None else self.family.default_grid(model.config, processor)
        self.model, self.processor = model, processor
        self.task, self.background_mode = task, background_mode
        self.background_words = tuple(check_word(w, "background_words[]") for w in background_words)
        if not self.background_words:
            raise ValueError("background_words must hold at least one word")
        self.max_background_words, self.max_new_tokens = max_background_words, max_new_tokens
        self.layers = tuple(layers) if layers is not None else default_layers(len(decoder_layers(model)))
        self.heads = None if heads is None else tuple(heads)
        self.capture = AttentionCapture(model, self.layers, self.heads)
        self.cut_layers = cut_layers
        self.checkpoint = checkpoint or getattr(model.config, "_name_or_path", "") or "<in-memory model>"
        self.revision = revision
        # The hub commit the weights came from (None for a local folder or an in-memory model).
        self.commit = getattr(model.config, "_commit_hash", None)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str,
        revision: str | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> VLMTeacher:
        """Load with `load_vlm` (bf16 on CUDA) and build the teacher; options go to `__init__`."""
        model, processor = load_vlm(
            checkpoint, revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        return cls(model, processor, checkpoint=checkpoint, revision=revision, **options)

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "family": self.family.name,
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "commit": self.commit,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "task": self.task,
            "prompt": task_prompt(self.task, ["{tgt_obj}"]),
            "answer": format_answer(self.task, ["{class}"], ["{background}"]).text,
            "background_mode": self.background_mode,
            "background_words": list(self.background_words),
            "layers": list(self.layers),
            "heads": "all" if self.heads is None else list(self.heads),
            "reduction": "mean over layers, heads and each entry's tokens; each entry L1-normalised",
            "geometry": self.family.geometry,
            "transformers": transformers.__version__,
        }

    def __call__(self, batch: Sequence[Sample]) -> TeacherOutput:
        """fore/back (B, *grid) float32 on CPU; info per image: prompt, answer, background source."""
        n = len(batch)
        fore = torch.zeros(n, *self.grid)
        back = torch.zeros(n, *self.grid)
        info: list[dict[str, Any]] = [{} for _ in range(n)]
        todo, images, sizes, words, prompts = [], [], [], [], []
        for i, sample in enumerate(batch):
            image, names = self._visual_prompt(sample, i)
            info[i] = {"instances": len(names)}
            if not names:  # dense image without boxes: nothing to attend to, an all-zero (invalid) map
                continue
            todo.append(i)
            images.append(self.family.prepare(image, self.processor))
            sizes.append((image.height, image.width))
            words.append(names)
            prompts.append(task_prompt(self.task, names))
        if not todo:
            return TeacherOutput(fore=fore, back=back, info=info)
        backgrounds, sources = self._backgrounds(images, prompts, words)
        answers = [format_answer(self.task, w, bg) for w, bg in zip(words, backgrounds, strict=True)]
        maps = self._maps(images, sizes, prompts, answers)
        for j, i in enumerate(todo):
            per_entry = maps[j]  # (K + 1, h, w)
            fore[i], back[i] = per_entry[:-1].sum(0), per_entry[-1]
            info[i].update(prompt=prompts[j], answer=answers[j].text, background_source=sources[j])
        return TeacherOutput(fore=fore, back=back, info=info)

    def _visual_prompt(self, sample: Sample, index: int) -> tuple[Image.Image, list[str]]:
        """The image the VLM sees (dense: boxes drawn) and the foreground entries' names."""
        image = sample["image"]
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(
                    f"batch[{index}]['image'] must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}"
                )
            image = to_pil_image(image)
        image = image.convert("RGB")
        if self.task == "classification":
            return image, [self._class_name(sample, index)]
        boxes = sample.get("boxes")
        if boxes is None or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"batch[{index}]['boxes'] must be a (K, 4) XYXY tensor for task='dense'")
        names = sample.get("box_names") or [self._class_name(sample, index)] * len(boxes)
        if len(names) != len(boxes):
            raise ValueError(f"batch[{index}]['box_names'] has {len(names)} names for {len(boxes)} boxes")
        names = [check_word(w, f"batch[{index}]['box_names'][]") for w in names]
        return (draw_boxes(image, boxes.tolist()) if len(boxes) else image), names

    @staticmethod
    def _class_name(sample: Sample, index: int) -> str:
        if "class_name" not in sample:
            raise ValueError(f"batch[{index}] needs 'class_name' (a readable name the VLM answers with)")
        return check_word(sample["class_name"], f"batch[{index}]['class_name']")

    def _device_inputs(self, enc: transformers.BatchFeature) -> dict[str, torch.Tensor]:
        """The family's model inputs on the model's device; floating ones (pixels) in the model's dtype."""
        param = next(self.model.parameters())
        missing = [k for k in self.family.input_names if k not in enc]
        if missing:
            raise ValueError(f"the processor returned no {missing}, which {self.family.name} models need")
        names = [*self.family.input_names, *(k for k in self.family.optional_inputs if k in enc)]
        return {
            k: enc[k].to(param.device, param.dtype) if enc[k].is_floating_point() else enc[k].to(param.device)
            for k in names
        }

    def _backgrounds(
        self, images: list[Image.Image], prompts: list[str], words: list[list[str]]
    ) -> tuple[list[tuple[str, ...]], list[str]]:
        """Background words per image, and their source: "fixed", "generated" or "fixed: none generated"."""
        if self.background_mode == "fixed":
            return [self.background_words] * len(images), ["fixed"] * len(images)
        texts = []
        for prompt, names in zip(prompts, words, strict=True):
            prefix, _ = answer_prefix(self.task, names)
            rendered = self.family.render(self.processor, prompt, prefix)
            texts.append(rendered[: locate(rendered, prefix) + len(prefix)])
        # Generation appends after the last token, so pad on the left and pass the mask.
        enc = self.processor(
            text=texts,
            images=self.family.batch_images(images),
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        inputs = self._device_inputs(enc)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                attention_mask=enc["attention_mask"].to(inputs["input_ids"].device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        generated = self.processor.tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        result, sources = [], []
        for text in generated:
            found = parse_background(text, self.max_background_words)
            result.append(tuple(found) if found else self.background_words)
            sources.append("generated" if found else "fixed: none generated")
        return result, sources

    def _maps(
        self,
        images: list[Image.Image],
        sizes: list[tuple[int, int]],
        prompts: list[str],
        answers: list[Answer],
    ) -> list[torch.Tensor]:
        """One forward for the batch -> per image (K + 1, h, w) float32 on `grid`: K foreground entries, back.

        images: what the processor sees (`Family.prepare`); sizes: (H, W) of the original images.
        """
        texts = [self.family.render(self.processor, p, a.text) for p, a in zip(prompts, answers, strict=True)]
        # Right padding needs no attention mask: with causal attention no real token sees the pads after it,
        # so each sequence is computed exactly as alone, and SDPA keeps its fast causal kernel.
        enc = self.processor(
            text=texts,
            images=self.family.batch_images(images),
            padding=True,
            padding_side="right",
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        columns, counts = image_columns(enc["input_ids"], self.model.config.image_token_id)
        layouts, groups = [], []
        for b, (text, answer) in enumerate(zip(texts, answers, strict=True)):
            layout = self.family.layout(self.model.config, self.processor, enc, b, sizes[b])
            if layout.n_tokens != counts[b]:
                raise ValueError(
                    f"sequence {b} holds {counts[b]} image tokens, the {self.family.name} layout expects "
                    f"{layout.n_tokens}: the processor and the family disagree"
                )
            layouts.append(layout)
            full = self.family.expand(self.processor, text, sizes[b], counts[b])
            offsets = enc["offset_mapping"][b]
            check_image_offsets(
                full, offsets, columns[b, : counts[b]], self.family.image_token(self.processor)
            )
            at = locate(full, answer.text)
            self.family.mark_answer(enc, b, token_rows(offsets, (at, at + len(answer.text)))[0])
            fore = [token_rows(offsets, (at + s, at + e)) for s, e in answer.fore]
            back = sorted(
                set(chain.from_iterable(token_rows(offsets, (at + s, at + e)) for s, e in answer.back))
            )
            groups.append([*fore, back])
        rows = pad_rows([list(chain.from_iterable(g)) for g in groups])
        cut = layers_up_to(self.model, max(self.layers)) if self.cut_layers else nullcontext()
        with torch.inference_mode(), self.capture.capturing(rows, columns) as captured, cut:
            self.model.model(**self._device_inputs(enc), use_cache=False)
        att = torch.stack([captured[i] for i in self.layers]).mean(dim=(0, 2)).cpu()  # (B, R, N_max)
        maps = []
        for b, entries in enumerate(groups):
            starts = [0, *torch.tensor([len(e) for e in entries]).cumsum(0).tolist()]
            per = torch.stack(
                [att[b, starts[k] : starts[k + 1], : counts[b]].mean(0) for k in range(len(entries))]
            )
            maps.append(self.family.to_grid(per, layouts[b], sizes[b], self.grid))
        return maps


class LlavaTeacher(VLMTeacher):
    """The paper's teacher, LLaVA-1.5 (`LlavaForConditionalGeneration`): registered as "llava"."""

    name = "llava"

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str = DEFAULT_CHECKPOINT,
        revision: str | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> LlavaTeacher:
        """Load with `load_llava` (bf16 on CUDA) and build the teacher; options go to `__init__`."""
        model, processor = load_llava(
            checkpoint, revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        return cls(model, processor, checkpoint=checkpoint, revision=revision, **options)
