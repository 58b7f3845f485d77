"""core_llava_onevision: lmms-eval's own llava-onevision model with core-attn settings (see settings.CoreSettings)."""

from __future__ import annotations

from lmms_eval.models.simple.llava_hf import LlavaHf as _Simple
from lmms_eval.models.chat.llava_hf import LlavaHf as _Chat

from ._mixin import CoreAttnModel


class CoreLlavaOneVision(CoreAttnModel, _Simple):
    """``lmms_eval.models.simple.llava_hf.LlavaHf`` plus head_config, dense, sink, window, ablate, ablate_k, seed."""


class CoreLlavaOneVisionChat(CoreAttnModel, _Chat):
    """``lmms_eval.models.chat.llava_hf.LlavaHf`` (chat messages) plus the same settings."""

    is_simple = False
