"""Head scores, selection and their file format."""

from .config import CONFIG_NAME, FORMAT_VERSION, SCORES_NAME, HeadConfig, head_label

__all__ = ["CONFIG_NAME", "FORMAT_VERSION", "SCORES_NAME", "HeadConfig", "head_label"]
