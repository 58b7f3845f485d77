"""lmms-eval entry point (group ``lmms_eval.models``): the core_* model names and their classes.

lmms-eval loads every entry point while ``lmms_eval.models`` is being imported, inside one try
block (a failure skips the other plugins too), so this module stays import-light: the classes
are named by dotted path and imported only when a run asks for them.
"""

from __future__ import annotations

_PACKAGE = "core_attn_eval.models"

# model name -> (simple class path or None, chat class path or None)
MODELS = {
    "core_qwen3_vl": (f"{_PACKAGE}.qwen3_vl.CoreQwen3VL", f"{_PACKAGE}.qwen3_vl.CoreQwen3VLChat"),
    "core_qwen2_5_vl": (f"{_PACKAGE}.qwen2_5_vl.CoreQwen2_5VL", f"{_PACKAGE}.qwen2_5_vl.CoreQwen2_5VLChat"),
    # lmms-eval's `llava_onevision` wraps the LLaVA-NeXT repository's code; the transformers
    # checkpoints (llava-hf/llava-onevision-*) run through its `llava_hf` class, extended here.
    "core_llava_onevision": (
        f"{_PACKAGE}.llava_onevision.CoreLlavaOneVision",
        f"{_PACKAGE}.llava_onevision.CoreLlavaOneVisionChat",
    ),
    # transformers-native InternVL (OpenGVLab/InternVL3*-hf) is lmms-eval's chat-only `internvl_hf`.
    "core_internvl": (None, f"{_PACKAGE}.internvl.CoreInternVLChat"),
}


def manifests():
    """The ModelManifest of every core_* model (called by lmms-eval's registry)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=name, simple_class_path=simple, chat_class_path=chat)
        for name, (simple, chat) in MODELS.items()
    ]
