"""An offline processor for tiny random-weight multimodal models (tests, demos, CLI ``--tiny``).

The real processors of these families cannot be built offline here (their video processors need
torchvision), so :class:`TinyProcessor` puts together what they would: transformers' own PIL image
processors for the pixels, a byte-level tokenizer whose special tokens sit at the ids the model
config names, and the family's placeholder expansion:

- Qwen-VL: ``<|vision_start|>`` + ``<|image_pad|>`` x (t*h*w / merge**2) + ``<|vision_end|>``; a video
  is ``t`` temporal groups of ``temporal_patch_size`` frames (Qwen3-VL: each group preceded by a
  ``<x.x seconds>`` timestamp and wrapped in vision start / end); ``mm_token_type_ids`` 1 / 2.
- LLaVA-OneVision: ``<image>`` x (the processor's own anyres count, or base**2 + 1 per image when a
  prompt has several); a video is frames x ceil(base / 2)**2 + 1 ``<video>`` tokens.
- InternVL: ``<img>`` + ``<IMG_CONTEXT>`` x (tiles * image_seq_length) + ``</img>``; video frames are
  one-tile blocks ``Frame{i}: <img>...</img>``.

Image sizes are capped (``max_image_tokens``, ``max_tiles``) so tiny models stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from types import SimpleNamespace

import torch

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def tiny_tokenizer(vocab_size: int, special_ids: Mapping[str, int], extra_special: Sequence[str] = ()):
    """Byte-level tokenizer (no merges) over exactly ``vocab_size`` ids.

    ``special_ids`` pins special tokens to ids (e.g. the config's image_token_id); ``extra_special``
    tokens and the 256 byte symbols take the lowest free ids; the rest are unused fillers.
    Returns a transformers PreTrainedTokenizerFast.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pinned = {str(k): int(v) for k, v in special_ids.items()}
    if len(set(pinned.values())) != len(pinned) or any(not 0 <= v < vocab_size for v in pinned.values()):
        raise ValueError(f"special token ids must be distinct and in [0, {vocab_size}), found {pinned}")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    need = len(pinned) + len(extra_special) + len(alphabet)
    if vocab_size < need:
        raise ValueError(
            f"a byte-level tokenizer needs vocab_size >= {need} "
            f"({len(pinned) + len(extra_special)} special + 256 bytes), found {vocab_size}"
        )
    free = iter(i for i in range(vocab_size) if i not in set(pinned.values()))
    vocab = dict(pinned)
    for token in [*extra_special, *alphabet]:
        vocab[token] = next(free)
    for i in free:
        vocab[f"<|unused_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [*pinned, *extra_special]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    for t in specials:
        assert fast.convert_tokens_to_ids(t) == vocab[t], t
    return fast


class TinyProcessor:
    """Processor-like object for a tiny model of ``family`` built from ``config``.

    Same calling convention as a transformers processor: ``apply_chat_template(messages,
    tokenize=False, add_generation_prompt=True)`` and ``__call__(text=[prompt], images=[...] or
    videos=[[frames]], return_tensors="pt", fps=...)`` -> dict of tensors (batch of one).
    """

    is_tiny = True

    def __init__(self, family: str, config, *, max_image_tokens: int = 16, max_tiles: int = 4):
        self.family, self.config = family, config
        text = config.get_text_config()
        vision = config.vision_config
        if family in QWEN:
            self.merge = int(getattr(vision, "spatial_merge_size", 2))
            self.patch = int(vision.patch_size)
            self.tps = int(getattr(vision, "temporal_patch_size", 2))
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

            factor = self.patch * self.merge
            self.image_processor = Qwen2VLImageProcessorPil(
                patch_size=self.patch,
                temporal_patch_size=self.tps,
                merge_size=self.merge,
                min_pixels=4 * factor**2,
                max_pixels=max_image_tokens * factor**2,
            )
            pinned = {
                "<|image_pad|>": config.image_token_id,
                "<|video_pad|>": config.video_token_id,
                "<|vision_start|>": config.vision_start_token_id,
                "<|vision_end|>": config.vision_end_token_id,
            }
            self.placeholders = {"image": "<|vision_start|><|image_pad|><|vision_end|>", "video": "<|video_pad|>"}
        elif family == "llava_onevision":
            from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
                LlavaOnevisionImageProcessorPil,
            )

            self.size = int(vision.image_size)
            self.base = self.size // int(vision.patch_size)
            pinpoints = getattr(config, "image_grid_pinpoints", None) or [[self.size, self.size]]
            self.image_processor = LlavaOnevisionImageProcessorPil(
                size={"height": self.size, "width": self.size},
                crop_size={"height": self.size, "width": self.size},
                image_grid_pinpoints=pinpoints,
            )
            pinned = {"<image>": config.image_token_id, "<video>": config.video_token_id}
            self.placeholders = {"image": "<image>", "video": "<video>"}
        elif family == "internvl":
            from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

            self.size = int(vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size)
            self.image_seq_length = int(getattr(config, "image_seq_length", 0)) or int(
                (self.size // int(_first(vision.patch_size))) ** 2 * float(config.downsample_ratio) ** 2
            )
            self.image_processor = GotOcr2ImageProcessorPil(
                size={"height": self.size, "width": self.size},
                crop_to_patches=True,
                min_patches=1,
                max_patches=max_tiles,
            )
            pinned = {"<IMG_CONTEXT>": config.image_token_id}
            self.placeholders = {"image": "<IMG_CONTEXT>", "video": "<video>"}
        else:
            raise ValueError(f"unknown family {family!r}; expected one of {(*QWEN, 'llava_onevision', 'internvl')}")
        extra = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
        if family == "internvl":
            extra += ["<img>", "</img>", "<video>"]
        self.tokenizer = tiny_tokenizer(int(text.vocab_size), pinned, extra)

    # --------------------------------------------------------------------- text
    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        """ChatML-style prompt; image / video items become the family's placeholder strings."""
        if tokenize:
            raise NotImplementedError("TinyProcessor.apply_chat_template only renders text (tokenize=False)")
        out = []
        for message in messages:
            parts = []
            content = message["content"]
            for item in [{"type": "text", "text": content}] if isinstance(content, str) else content:
                parts.append(item["text"] if item["type"] == "text" else self.placeholders[item["type"]])
            out.append(f"<|im_start|>{message['role']}\n{''.join(parts)}<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)

    # ------------------------------------------------------------------- pixels
    def __call__(self, text, images=None, videos=None, return_tensors: str = "pt", fps: float | None = None, **_):
        """Expand placeholders and encode pixels; one prompt (``text=[prompt]``) at a time."""
        prompt = text[0] if isinstance(text, (list, tuple)) else text
        if isinstance(text, (list, tuple)) and len(text) != 1:
            raise ValueError(f"TinyProcessor takes one prompt at a time, found {len(text)}")
        out: dict = {}
        if images:
            expansions, pixels = self._images(list(images))
            prompt = self._expand(prompt, self.placeholders["image"], expansions)
            out.update(pixels)
        if videos:
            if len(videos) != 1:
                raise ValueError(f"TinyProcessor takes one video per prompt, found {len(videos)}")
            expansion, pixels = self._video(list(videos[0]), fps or 1.0)
            prompt = self._expand(prompt, self.placeholders["video"], [expansion])
            out.update(pixels)
        enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        out["input_ids"], out["attention_mask"] = enc["input_ids"], enc["attention_mask"]
        if self.family in QWEN:
            ids = out["input_ids"]
            types = torch.zeros_like(ids)
            types[ids == self.config.image_token_id] = 1
            types[ids == self.config.video_token_id] = 2
            out["mm_token_type_ids"] = types
        return out

    @staticmethod
    def _expand(prompt: str, placeholder: str, expansions: Sequence[str]) -> str:
        pieces = prompt.split(placeholder)
        if len(pieces) - 1 != len(expansions):
            raise ValueError(f"prompt has {len(pieces) - 1} {placeholder!r} placeholders for {len(expansions)} inputs")
        return pieces[0] + "".join(e + p for e, p in zip(expansions, pieces[1:], strict=True))

    def _images(self, images: list) -> tuple[list[str], dict]:
        if self.family in QWEN:
            px = self.image_processor(images=images, return_tensors="pt")
            counts = [int(g.prod()) // self.merge**2 for g in px["image_grid_thw"]]
            text = [f"<|vision_start|>{'<|image_pad|>' * n}<|vision_end|>" for n in counts]
            return text, {"pixel_values": px["pixel_values"], "image_grid_thw": px["image_grid_thw"]}
        if self.family == "llava_onevision":
            px = self.image_processor(images=[images], return_tensors="pt")
            if len(images) > 1:
                counts = [self.base**2 + 1] * len(images)
            else:
                counts = [self._llava_anyres_count(images[0].size[::-1])]
            keep = ("pixel_values", "image_sizes", "batch_num_images")
            return ["<image>" * n for n in counts], {k: px[k] for k in keep}
        px = self.image_processor(images=images, return_tensors="pt")
        tiles = [int(n) for n in px["num_patches"]]
        text = [f"<img>{'<IMG_CONTEXT>' * (self.image_seq_length * n)}</img>" for n in tiles]
        return text, {"pixel_values": px["pixel_values"]}

    def _llava_anyres_count(self, height_width: tuple[int, int]) -> int:
        """LlavaOnevisionProcessor's own single-image token count, run against this image processor."""
        from transformers import LlavaOnevisionProcessor

        counter = SimpleNamespace(
            image_processor=self.image_processor,
            num_image_tokens=self.base**2,
            vision_aspect_ratio=getattr(self.config, "vision_aspect_ratio", "anyres_max_9"),
        )
        counter._get_unpadded_features = partial(LlavaOnevisionProcessor._get_unpadded_features, counter)
        return int(LlavaOnevisionProcessor._get_number_of_features(counter, *height_width, self.size, self.size))

    def _video(self, frames: list, fps: float) -> tuple[str, dict]:
        if self.family in QWEN:
            return self._qwen_video(frames, fps)
        if self.family == "llava_onevision":
            square = [f.resize((self.size, self.size)) for f in frames]
            px = self.image_processor(images=[square], return_tensors="pt")["pixel_values"]  # [F, 1, C, S, S]
            n = len(frames) * math.ceil(self.base / 2) ** 2 + 1
            return "<video>" * n, {"pixel_values_videos": px[:, 0].unsqueeze(0)}
        px = self.image_processor(images=frames, crop_to_patches=False, return_tensors="pt")["pixel_values"]
        blocks = [f"Frame{i + 1}: <img>{'<IMG_CONTEXT>' * self.image_seq_length}</img>" for i in range(len(frames))]
        return "\n".join(blocks), {"pixel_values": px}

    def _qwen_video(self, frames: list, fps: float) -> tuple[str, dict]:
        """Temporal patches of ``tps`` consecutive frames, laid out like Qwen2-VL's video processor."""
        frames = frames + [frames[-1]] * (-len(frames) % self.tps)  # pad by repeating the last frame
        px = self.image_processor(images=frames, return_tensors="pt")
        grid = px["image_grid_thw"][0]
        n = int(grid[1] * grid[2])
        c = int(self.config.vision_config.in_channels) if hasattr(self.config.vision_config, "in_channels") else 3
        # each frame's patches [n, C, tps, p, p] hold the frame repeated tps times: keep one copy
        per_frame = px["pixel_values"].view(len(frames), n, c, self.tps, self.patch, self.patch)[:, :, :, 0]
        groups = per_frame.view(len(frames) // self.tps, self.tps, n, c, self.patch, self.patch)
        pixel_values = groups.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * self.tps * self.patch**2)
        t = len(frames) // self.tps
        tokens = n // self.merge**2
        if self.family == "qwen3_vl":
            times = [(g * self.tps + (g * self.tps + self.tps - 1)) / 2 / fps for g in range(t)]
            text = "".join(f"<{s:.1f} seconds><|vision_start|>{'<|video_pad|>' * tokens}<|vision_end|>" for s in times)
        else:
            text = f"<|vision_start|>{'<|video_pad|>' * (t * tokens)}<|vision_end|>"
        grid_thw = torch.tensor([[t, int(grid[1]), int(grid[2])]])
        return text, {"pixel_values_videos": pixel_values, "video_grid_thw": grid_thw}


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value
