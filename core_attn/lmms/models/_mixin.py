"""The part every core-attn lmms-eval model shares: take our model_args, load through the
built-in class, then apply the settings to the loaded model."""

from __future__ import annotations

from loguru import logger as eval_logger

from ..settings import CoreSettings, PrefillTimer, configure


class CoreAttnModel:
    """Mixin placed before an lmms-eval model class: ``class CoreX(CoreAttnModel, BuiltinX)``.

    Our model_args (see :class:`core_attn.lmms.settings.CoreSettings`) are taken out before the
    built-in ``__init__`` runs (it rejects unknown ones), so prompts, visual sampling and
    generation stay exactly the built-in model's. The built-in classes accept only their own
    attn_implementation values; the model loads with sdpa and ``core_attn.attach`` switches its
    text decoder to core_hybrid afterwards.
    """

    def __init__(self, **kwargs):
        settings, rest = CoreSettings.from_model_args(kwargs)
        if rest.get("attn_implementation") is None:
            rest["attn_implementation"] = "sdpa"
        super().__init__(**rest)
        self.core_settings = settings
        self.core_summary, self._core_stack = configure(self.model, settings)
        self.prefill_timer = PrefillTimer(self.model)
        dense = self.core_summary["dense_heads"]
        eval_logger.info(
            f"core-attn: dense={settings.dense} "
            + (f"({len(dense)} heads dense, sink {settings.sink}, window {settings.window}) " if dense else "(sdpa) ")
            + (f"ablating {self.core_summary['ablated_heads']}" if settings.ablate else "")
        )

    def core_report(self) -> dict:
        """Settings, dense / ablated heads and prefill timings so far (for result files and sweeps)."""
        return {**self.core_summary, **self.prefill_timer.summary()}
