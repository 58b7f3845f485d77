"""core_qwen3_vl: lmms-eval's own qwen3-vl model with core-attn settings (see settings.CoreSettings)."""

from __future__ import annotations

from lmms_eval.models.simple.qwen3_vl import Qwen3_VL as _Simple
from lmms_eval.models.chat.qwen3_vl import Qwen3_VL as _Chat

from ._mixin import CoreAttnModel


class CoreQwen3VL(CoreAttnModel, _Simple):
    """``lmms_eval.models.simple.qwen3_vl.Qwen3_VL`` plus head_config, dense, sink, window, ablate, ablate_k, seed."""


class CoreQwen3VLChat(CoreAttnModel, _Chat):
    """``lmms_eval.models.chat.qwen3_vl.Qwen3_VL`` (chat messages) plus the same settings."""

    is_simple = False
