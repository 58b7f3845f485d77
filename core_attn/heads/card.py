"""The README.md model card of a published head config.

The card has YAML metadata (library_name, base_model, tags) and a generated block between two
marker comments. Regenerating a card replaces only that block and adds missing metadata: text
outside the markers, and metadata values already set, are the user's and are kept as written
(the same contract as PEFT's model cards).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import HeadConfig

CARD_NAME = "README.md"
HEATMAP_NAME = "head_scores.png"
BEGIN_MARKER = "<!-- core-attn:generated:begin -->"
END_MARKER = "<!-- core-attn:generated:end -->"
LIBRARY_NAME = "core-attn"
TAGS = ("core-attn", "attention-heads", "retrieval-heads", "head-ranking")
_BLOCK = re.compile(re.escape(BEGIN_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)


def is_hub_model_id(name: str | None) -> bool:
    """True for an "org/name" string that huggingface_hub accepts as a repo id."""
    if not name or name.count("/") != 1:
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def sample_counts(config: HeadConfig) -> dict[str, int | None]:
    """{dataset: number of samples or None}: provenance["datasets"] plus the per-dataset score maps."""
    counts: dict[str, int | None] = {name: None for name in config.dataset_scores}
    recorded = config.provenance.get("datasets")
    if isinstance(recorded, dict):
        for name, n in recorded.items():
            counts[str(name)] = n if isinstance(n, int) and not isinstance(n, bool) else None
    elif isinstance(recorded, list):
        counts.update({str(name): None for name in recorded})
    return dict(sorted(counts.items()))


def top_heads_rows(config: HeadConfig, k: int) -> list[tuple[int, str, int, int, int, float]]:
    """(rank, label, layer, q_head, kv_head, score) of the k best q_heads, best first."""
    group = config.num_q_heads // config.num_kv_heads
    rows = []
    for rank, (layer, q_head) in enumerate(config.ranking()[: max(0, k)].tolist(), start=1):
        score = float(config.scores[layer, q_head])
        rows.append((rank, f"L{layer}H{q_head}", layer, q_head, q_head // group, score))
    return rows


def _generated_block(config: HeadConfig, reference: str | None, heatmap: str | None, top_k: int) -> str:
    from .. import __version__
    from .config import FORMAT_VERSION

    model = config.model_id or "an unnamed model"
    hub = is_hub_model_id(config.model_id)
    lines = [
        BEGIN_MARKER,
        "<!-- Written by core-attn. Text between the two core-attn:generated markers is replaced on every "
        "push; text outside them is kept. -->",
        "",
        f"# CoRe head ranking for {model}",
        "",
        f"Per-head `{config.metric}` scores of the text decoder of "
        + (f"[{model}](https://huggingface.co/{model})" if hub else f"`{model}`")
        + ", for core-attn's hybrid prefill attention: the top-ranked heads keep full causal attention, "
        "all other heads attend only to the first tokens (sinks) and a sliding window.",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{model}`" + (f" at revision `{config.model_revision}`" if config.model_revision else "") + " |",
        f"| heads | {config.num_layers} layers x {config.num_q_heads} q_heads "
        f"({config.num_kv_heads} kv_heads per layer), {config.num_heads_total} q_heads in all |",
        f"| metric | `{config.metric}` |",
    ]
    counts = sample_counts(config)
    if counts:
        shown = ", ".join(f"{name} ({n} samples)" if n is not None else name for name, n in counts.items())
        lines.append(f"| datasets | {shown} |")
    if config.dataset_scores:
        lines.append(f"| per-dataset score maps | {', '.join(sorted(config.dataset_scores))} |")
    lines += [
        f"| streaming defaults | sink {config.sink_size} tokens, window {config.window_size} tokens |",
        f"| files | head_config.json (format {FORMAT_VERSION}), head_scores.safetensors, written by core-attn "
        f"{__version__} |",
        "",
        "## Usage",
        "",
        "```python",
        "import core_attn",
    ]
    if hub:
        lines += [
            "from transformers import AutoModelForImageTextToText",
            "",
            f'model = AutoModelForImageTextToText.from_pretrained("{model}", '
            'attn_implementation={"text_config": "core_hybrid"})',
        ]
    else:
        lines += ["", f"model = ...  # a transformers model: {model}"]
    if reference:
        lines.append(f'core_attn.attach(model, "{reference}", dense=0.05)  # top 5% of q_heads dense, rest streaming')
    else:
        lines.append("core_attn.attach(model, dense=0.05)  # found by model name in core-attn's bundled index")
    lines += ["```", "", f"## Top heads ({config.metric}, all layers ranked together)", ""]
    lines += ["| rank | head | layer | q_head | kv_head | score |", "|---:|---|---:|---:|---:|---:|"]
    for rank, label, layer, q_head, kv_head, score in top_heads_rows(config, top_k):
        lines.append(f"| {rank} | {label} | {layer} | {q_head} | {kv_head} | {score:.4g} |")
    if heatmap:
        lines += ["", f"![{config.metric} per layer and q_head]({heatmap})"]
    if config.provenance:
        lines += [
            "",
            "## Provenance",
            "",
            "```json",
            json.dumps(config.provenance, indent=2, sort_keys=True),
            "```",
        ]
    lines.append(END_MARKER)
    return "\n".join(lines)


def render_card(
    config: HeadConfig,
    *,
    existing: str | None = None,
    reference: str | None = None,
    heatmap: str | None = HEATMAP_NAME,
    top_k: int = 20,
) -> str:
    """The README.md text for ``config``, merged into ``existing`` when given.

    Args:
        config: the head config the card describes.
        existing: the current README.md text (from the Hub or the folder), or None.
        reference: what the usage snippet passes to ``attach`` (a repo id); None shows the
            index lookup ``attach(model, dense=...)``.
        heatmap: file name of the heatmap image next to the card, or None for no image.
        top_k: rows in the top heads table.
    Raises:
        ValueError: ``existing`` has a begin marker without its end marker (or the reverse):
            the card is not rewritten, so no user text can be lost.
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    block = _generated_block(config, reference, heatmap, min(top_k, config.num_heads_total))
    text = existing or ""
    if not REGEX_YAML_BLOCK.search(text):
        text = "---\n{}\n---\n" + text
    card = ModelCard(text)
    data = card.data
    if not getattr(data, "library_name", None):
        data.library_name = LIBRARY_NAME
    if is_hub_model_id(config.model_id) and not getattr(data, "base_model", None):
        data.base_model = config.model_id
    tags = list(getattr(data, "tags", None) or [])
    data.tags = tags + [t for t in TAGS if t not in tags]

    body = card.text
    n_begin, n_end = body.count(BEGIN_MARKER), body.count(END_MARKER)
    pairs = _BLOCK.findall(body)
    if n_begin != n_end or n_begin != len(pairs) or n_begin > 1:
        raise ValueError(
            f"README.md has {n_begin} '{BEGIN_MARKER}' and {n_end} '{END_MARKER}' markers, expected one of each "
            "(or none): fix the card by hand so the generated block can be replaced without touching your text"
        )
    if pairs:
        body = _BLOCK.sub(lambda _: block, body, count=1)
    elif body.strip():
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    else:
        body = block + "\n"
    card.text = body
    return str(card)
