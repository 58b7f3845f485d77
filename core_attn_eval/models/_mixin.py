"""The part every core-attn lmms-eval model shares: take our model_args, load through the
built-in class, then apply the settings to the loaded model."""

from __future__ import annotations

from loguru import logger as eval_logger

from .. import ram
from ..settings import CoreSettings, PrefillTimer, configure


class CoreAttnModel:
    """Mixin placed before an lmms-eval model class: ``class CoreX(CoreAttnModel, BuiltinX)``.

    Our model_args (see :class:`core_attn_eval.settings.CoreSettings`) are taken out before the
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
            + (
                f"({len(dense)} heads dense, sink {self.core_summary['sink_size']}, "
                f"window {self.core_summary['window_size']}) "
                if dense
                else "(sdpa) "
            )
            + (f"ablating {self.core_summary['ablated_heads']}" if settings.ablate else "")
        )

    def generate_until(self, requests):
        """Requests of core_ram_* tasks answer with RAM maps (JSON); all others go to the built-in class."""
        answers: list = [None] * len(requests)
        plain = []
        for i, request in enumerate(requests):
            doc_id, task, split = request.args[-3:]
            kind = ram.kind_of_task(task)
            if kind is None:
                plain.append(i)
                continue
            doc = self.task_dict[task][split][doc_id]
            answers[i] = ram.ram_response(
                self.model,
                self._sample_builder(),
                doc,
                kind,
                model_id=getattr(self.model.config, "_name_or_path", None),
                output=self.core_settings.ram_output,
            )
        if plain:
            for i, answer in zip(plain, super().generate_until([requests[i] for i in plain])):
                answers[i] = answer
        return answers

    def _sample_builder(self):
        """Encodes RAM records with this model's own processor (the one its generation uses)."""
        if getattr(self, "_core_builder", None) is None:
            from core_attn.analysis.data import SampleBuilder, family_of

            processor = getattr(self, "processor", None) or getattr(self, "_image_processor", None)
            if processor is None:
                raise ValueError(f"{type(self).__name__} has no processor to encode RAM records with")
            self._core_builder = SampleBuilder(family_of(self.model.config), self.model.config, processor)
        return self._core_builder

    def core_report(self) -> dict:
        """Settings, dense / ablated heads and prefill timings so far (for result files and sweeps)."""
        return {**self.core_summary, **self.prefill_timer.summary()}
