"""A stand-in for bitsandbytes, on the path of the Unsloth peer alone (trl_image_grpo.py).

Unsloth 2026.10.9 imports ``bitsandbytes.nn.Linear4bit`` while it patches any model, also for full
fine-tuning in bf16, where no layer is quantised and the class serves only isinstance checks. The
real wheel (about 60 MiB) does not fit beside Unsloth's in one device call, so the benchmark puts
this module first on the Unsloth worker's path: every name is an empty class that no layer is an
instance of. Nothing quantised may run through it; the benchmark asks for none.
"""

__version__ = "0.49.0"
_classes: dict[str, type] = {}


def __getattr__(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return _classes.setdefault(name, type(name, (), {}))
