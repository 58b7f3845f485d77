"""core_qwen2_5_vl: lmms-eval's own qwen2-5-vl model with core-attn settings (see settings.CoreSettings)."""

from __future__ import annotations

from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL as _Simple
from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as _Chat

from ._mixin import CoreAttnModel


class CoreQwen2_5VL(CoreAttnModel, _Simple):
    """``lmms_eval.models.simple.qwen2_5_vl.Qwen2_5_VL`` plus head_config, dense, sink, window, ablate, ablate_k, seed."""


class CoreQwen2_5VLChat(CoreAttnModel, _Chat):
    """``lmms_eval.models.chat.qwen2_5_vl.Qwen2_5_VL`` (chat messages) plus the same settings."""

    is_simple = False
