"""LoRA adapter folders and the optional peft package, known without importing torch, peft or models/.

A low module, like console.py: `videothinker.config` asks it whether a reference folder is an
adapter and whether peft is installed (so a run that needs peft stops before anything loads), and
models/loading.py and models/lora.py build on it. An adapter folder is what peft's
``save_pretrained`` writes: ``adapter_config.json`` (its base in ``base_model_name_or_path``) and
``adapter_model.safetensors``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
# peft 0.16 and 0.17 do not import with transformers 5 (pyproject's lora extra excludes them).
INSTALL_HINT = "pip install 'videothinker[lora]' (or pip install 'peft>=0.18')"


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def require_peft():
    """The peft module, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise ImportError(f"LoRA needs the peft package, which is not installed: {INSTALL_HINT}") from exc
    return peft


def is_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a peft adapter (``adapter_config.json``)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_config(path: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json`` as a mapping."""
    return json.loads((Path(path).expanduser() / ADAPTER_CONFIG).read_text())


def resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def adapter_base(path: str | Path, override: str | None = None) -> Path:
    """The resolved base model of an adapter: ``override`` if given, else its
    ``base_model_name_or_path`` (a relative path is taken from the current folder)."""
    base = override or adapter_config(path).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{path}/{ADAPTER_CONFIG} names no base_model_name_or_path; set reference_base to the base "
            "model's folder"
        )
    return resolved(base)
