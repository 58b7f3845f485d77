"""Tiny random-weight multimodal models of every supported family, and inputs for them.

Used by the test-suite and the ``core-attn demo`` command: no weights or processors are
downloaded. The models are the real transformers classes built from small configs, so the
attention modules, masks, caches and multimodal RoPE are the ones real checkpoints use.

Inputs are built without a processor: a prompt is ``[prefix text] [image tokens] [question]``,
with the number of image placeholder tokens computed the way the model computes its image
features (Qwen: grid_t * grid_h * grid_w / merge**2; LLaVA-OneVision: counted with the
model's own ``get_image_features``; InternVL: tiles * image_seq_length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import (
    AutoModelForImageTextToText,
    InternVLConfig,
    LlavaOnevisionConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen3VLConfig,
)

FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl", "llava_onevision", "internvl")

VOCAB = 512
IMAGE_TOKEN_ID = 500
VIDEO_TOKEN_ID = 501
VISION_START_ID = 502
VISION_END_ID = 503
PAD_TOKEN_ID = 0
TEXT_IDS = (1, 480)  # ordinary text tokens are drawn from [1, 480)

_TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD_TOKEN_ID,
             max_position_embeddings=4096, bos_token_id=None, eos_token_id=None)
_QWEN_VISION = dict(patch_size=8, spatial_merge_size=2, temporal_patch_size=2)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; supported: {', '.join(FAMILIES)}")


def tiny_config(family: str, **text_overrides) -> PretrainedConfig:
    """A tiny config of the family's real model class.

    Text decoder: 4 layers, hidden 64, 4 q_heads, 2 kv_heads (GQA), head_dim 16 unless
    overridden (overrides apply to the text config: num_hidden_layers, num_attention_heads, ...).
    """
    _check_family(family)
    text = dict(_TEXT, **text_overrides)
    text.setdefault("head_dim", text["hidden_size"] // text["num_attention_heads"])
    ids = dict(image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID,
               vision_start_token_id=VISION_START_ID, vision_end_token_id=VISION_END_ID)
    if family == "qwen3_vl":
        half = text["head_dim"] // 2
        section = [half - 2 * (half // 3), half // 3, half // 3]  # t, h, w rotary sections sum to head_dim / 2
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section,
                                   "mrope_interleaved": True}
        vision = dict(_QWEN_VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=text["hidden_size"], num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        half = text["head_dim"] // 2
        section = [half - 2 * (half // 3), half // 3, half // 3]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
        vision = dict(_QWEN_VISION, depth=2, embed_dim=32, hidden_size=text["hidden_size"], num_heads=2,
                      mlp_ratio=2, out_hidden_size=text["hidden_size"], intermediate_size=64,
                      fullatt_block_indexes=[1], window_size=16)
        cls = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
        return cls(text_config=text, vision_config=vision, **ids)
    if family == "llava_onevision":
        return LlavaOnevisionConfig(
            text_config=dict(text, model_type="qwen2"),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
            image_token_index=IMAGE_TOKEN_ID,
            video_token_index=VIDEO_TOKEN_ID,
            image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
            vision_feature_layer=-1,
        )
    return InternVLConfig(
        text_config=dict(text, model_type="qwen3"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[32, 32], patch_size=[8, 8]),
        image_token_id=IMAGE_TOKEN_ID,
        image_seq_length=4,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
    )


def build_tiny_model(
    family: str,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | dict = "sdpa",
    save_dir: str | None = None,
    **text_overrides,
):
    """Build a tiny random-weight model in eval mode.

    With ``save_dir`` the model is saved there and loaded back through
    ``AutoModelForImageTextToText.from_pretrained(save_dir, attn_implementation=...)``, the
    path users take.
    """
    config = tiny_config(family, **text_overrides)
    torch.manual_seed(seed)
    if save_dir is None:
        model = AutoModelForImageTextToText.from_config(config, attn_implementation=attn_implementation)
        return model.to(dtype).eval()
    AutoModelForImageTextToText.from_config(config).save_pretrained(save_dir)
    return AutoModelForImageTextToText.from_pretrained(
        save_dir, attn_implementation=attn_implementation, dtype=dtype
    ).eval()


@dataclass
class TinyInputs:
    """Model inputs plus where things sit (absolute positions in input_ids, per batch row).

    model_inputs: what to pass to forward / generate.
    image_token_spans: [(start, end)] per row, end exclusive.
    question_spans: [(start, end)] per row: the text after the image (the "query" tokens).
    pad_lengths: number of pad tokens per row.
    """

    model_inputs: dict
    image_token_spans: list[tuple[int, int]]
    question_spans: list[tuple[int, int]]
    pad_lengths: list[int]
    padding: str = "left"
    per_row_images: list[dict] = field(default_factory=list)


def num_image_tokens(family: str, config, image_size: tuple[int, int] = (64, 64), model=None) -> int:
    """Image placeholder tokens one image of ``image_size`` (H, W) becomes."""
    _check_family(family)
    h, w = image_size
    if family.startswith("qwen"):
        p, m = _QWEN_VISION["patch_size"], _QWEN_VISION["spatial_merge_size"]
        return (h // p) * (w // p) // (m * m)
    if family == "internvl":
        return config.image_seq_length  # one tile per image here
    if model is None:
        raise ValueError("llava_onevision needs the model to count its image features")
    pixel_values, sizes = _llava_pixels(config, image_size, torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes)
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    return int(feats[0].shape[0])


def _qwen_pixels(image_size, g):
    p, t = _QWEN_VISION["patch_size"], _QWEN_VISION["temporal_patch_size"]
    gh, gw = image_size[0] // p, image_size[1] // p
    pixel_values = torch.randn(gh * gw, 3 * t * p * p, generator=g)
    return pixel_values, torch.tensor([[1, gh, gw]])


def _llava_pixels(config, image_size, g):
    side = config.vision_config.image_size
    # anyres: one base view plus one view per tile of the best-fitting pinpoint.
    tiles = (image_size[0] // side) * (image_size[1] // side)
    pixel_values = torch.randn(1, 1 + tiles, 3, side, side, generator=g)
    return pixel_values, torch.tensor([list(image_size)])


def _image_inputs(family, config, image_size, g):
    if family.startswith("qwen"):
        pv, thw = _qwen_pixels(image_size, g)
        return {"pixel_values": pv, "image_grid_thw": thw}
    if family == "llava_onevision":
        pv, sizes = _llava_pixels(config, image_size, g)
        return {"pixel_values": pv, "image_sizes": sizes}
    side = config.vision_config.image_size[0]
    return {"pixel_values": torch.randn(1, 3, side, side, generator=g)}


def make_inputs(
    family: str,
    config,
    *,
    batch_size: int = 1,
    text_len: int = 12,
    with_image: bool = True,
    image_size: tuple[int, int] = (64, 64),
    padding: str = "left",
    pad_lengths: list[int] | None = None,
    seed: int = 0,
    model=None,
) -> TinyInputs:
    """Inputs for forward / generate without a processor.

    Row layout: ``prefix (4 text tokens) [vision_start] image tokens [vision_end] question``;
    the question has ``text_len`` tokens in the most padded row. With batch_size > 1 row i gets
    exactly ``pad_lengths[i]`` pad tokens (default 0, 3, 6, ...) on the ``padding`` side; less
    padded rows have longer questions.
    ``model`` is needed for llava_onevision (to count image features).
    """
    _check_family(family)
    if padding not in ("left", "right"):
        raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
    pad_lengths = list(pad_lengths) if pad_lengths is not None else [3 * i for i in range(batch_size)]
    if len(pad_lengths) != batch_size:
        raise ValueError(f"pad_lengths has {len(pad_lengths)} entries, batch_size is {batch_size}")
    g = torch.Generator().manual_seed(seed)
    n_img = num_image_tokens(family, config, image_size, model) if with_image else 0
    qwen = family.startswith("qwen")
    rows, images, img_spans, q_spans = [], [], [], []
    most = max(pad_lengths)
    for pad in pad_lengths:
        prefix = torch.randint(*TEXT_IDS, (4,), generator=g).tolist()
        # A row padded less has a longer question, so that every row gets exactly its pads.
        question = torch.randint(*TEXT_IDS, (text_len + most - pad,), generator=g).tolist()
        ids = list(prefix)
        if with_image:
            ids += [VISION_START_ID] if qwen else []
            img_start = len(ids)
            ids += [IMAGE_TOKEN_ID] * n_img
            img_end = len(ids)
            ids += [VISION_END_ID] if qwen else []
            images.append(_image_inputs(family, config, image_size, g))
        else:
            img_start = img_end = len(ids)
        q_start = len(ids)
        ids += question
        rows.append(ids)
        img_spans.append((img_start, img_end))
        q_spans.append((q_start, len(ids)))
    length = len(rows[0]) + pad_lengths[0]
    input_ids = torch.full((batch_size, length), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    for i, (ids, pad) in enumerate(zip(rows, pad_lengths)):
        start = pad if padding == "left" else 0
        input_ids[i, start : start + len(ids)] = torch.tensor(ids)
        attention_mask[i, start : start + len(ids)] = 1
        img_spans[i] = (img_spans[i][0] + start, img_spans[i][1] + start)
        q_spans[i] = (q_spans[i][0] + start, q_spans[i][1] + start)
    model_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_image:
        for key in images[0]:
            model_inputs[key] = torch.cat([im[key] for im in images], dim=0)
    if qwen:
        model_inputs["mm_token_type_ids"] = (input_ids == IMAGE_TOKEN_ID).long()
    return TinyInputs(model_inputs, img_spans, q_spans, pad_lengths, padding, images)


def slice_inputs(inputs: TinyInputs, row: int) -> TinyInputs:
    """The inputs of one batch row with its padding removed."""
    mask = inputs.model_inputs["attention_mask"][row].bool()
    start = int(mask.nonzero()[0])
    end = int(mask.nonzero()[-1]) + 1
    out = {k: inputs.model_inputs[k][row : row + 1, start:end] for k in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in inputs.model_inputs:
        out["mm_token_type_ids"] = inputs.model_inputs["mm_token_type_ids"][row : row + 1, start:end]
    if inputs.per_row_images:
        out.update(inputs.per_row_images[row])
    shift = lambda span: (span[0] - start, span[1] - start)  # noqa: E731
    return TinyInputs(out, [shift(inputs.image_token_spans[row])], [shift(inputs.question_spans[row])], [0],
                      inputs.padding, inputs.per_row_images[row : row + 1])
