"""core_videomme: Video-MME (no subtitles) by task family, scored as lmms-eval's videomme scores it.

Prompts and answer extraction are lmms-eval's own (tasks/videomme/utils.py). The 12 task types
fall into the paper's three families by their name (``... Perception``, ``... Recognition``,
``... Reasoning``) and ``other`` (OCR Problems, Counting Problem, Information Synopsis); one
subtask per family, and the group score weights every question alike (Video-MME's overall
accuracy). A record may carry an absolute ``video_path``; otherwise the video is
``$HF_HOME/videomme/data/<videoID>.mp4`` (or .MP4 / .mkv) as for the built-in task.
"""

import os

from lmms_eval.tasks.videomme.utils import extract_characters_regex, videomme_doc_to_text  # noqa: F401

FAMILIES = ("perception", "recognition", "reasoning", "other")


def family(task_type: str) -> str:
    last = task_type.split()[-1].lower()
    return last if last in FAMILIES else "other"


def videomme_doc_to_visual(doc):
    if doc.get("video_path"):
        candidates = [doc["video_path"]]
    else:
        root = os.path.join(os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface")), "videomme", "data")
        candidates = [os.path.join(root, doc["videoID"] + ext) for ext in (".mp4", ".MP4", ".mkv")]
    for path in candidates:
        if os.path.exists(path):
            return [path]
    raise FileNotFoundError(f"Video-MME video not found at {candidates[0]} (download the videos, or give records a video_path)")


def videomme_process_results(doc, results):
    pred = extract_characters_regex(results[0])
    return {"acc": 1.0 if pred.lower() == doc["answer"].lower() else 0.0}


def _only(name):
    def process_docs(dataset):
        return dataset.filter(lambda doc: family(doc["task_type"]) == name)

    return process_docs


for _family in FAMILIES:
    globals()[f"docs_{_family}"] = _only(_family)
