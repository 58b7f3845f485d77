"""lmms-eval model classes with core-attn settings, one module per family.

Each module imports lmms-eval's built-in class it extends, so import only the one you need
(lmms-eval's registry does, through :mod:`core_attn_eval.manifest`).
"""
