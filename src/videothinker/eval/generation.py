"""Greedy batched generation with a local checkpoint: the model behind `videothinker eval`.

Greedy decoding with the decode engine (``rollout.engine=graph``, `videothinker.models.engine`) or
with transformers' ``generate`` (``rollout.engine=generate``, and for models the engine cannot
serve); both give the same tokens. ``generate`` gets a fresh generation config, so that sampling
settings a checkpoint ships (temperature, top_p) neither apply nor warn; generation stops at the
model's and the chat template's end tokens (`videothinker.models.loading.eos_token_ids`).
"""

from __future__ import annotations

from videothinker.config import RolloutConfig
from videothinker.data.video import SampledVideo
from videothinker.models.inputs import build_inputs
from videothinker.models.loading import eos_token_ids, load_model, load_processor, processor_size_factor


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other name is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelGenerator:
    """Greedy completions of prompt batches with a model loaded from a local folder.

    Attributes:
        size_factor: pixels per side of one merged vision token (frames are resized to multiples).
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_new_tokens: int = 1024,
        attn_implementation: str = "sdpa",
        rollout: RolloutConfig | None = None,
    ):
        from transformers import GenerationConfig

        from videothinker.models.engine import make_engine

        self.processor = load_processor(model_path)
        self.model = load_model(
            model_path, dtype=dtype, device=resolve_device(device), attn_implementation=attn_implementation
        )
        self.size_factor = processor_size_factor(self.processor)
        self.engine = make_engine(self.model, rollout or RolloutConfig())
        eos = eos_token_ids(self.model, self.processor)
        pad = self.processor.tokenizer.pad_token_id
        self.eos, self.pad = eos, eos[0] if pad is None else pad
        self.max_new_tokens = max_new_tokens
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0] if pad is None else pad,
        )

    def __call__(self, prompts: list[str], visuals: list[SampledVideo | None]) -> list[str]:
        """The greedy completion of each prompt (special tokens removed, <answer> tags kept)."""
        import torch

        inputs = build_inputs(self.processor, prompts, visuals).to(self.model.device)
        with torch.inference_mode():
            if self.engine is not None:
                completions = self.engine.generate(
                    inputs,
                    1,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_ids=self.eos,
                    pad_token_id=self.pad,
                    do_sample=False,
                )
            else:
                sequences = self.model.generate(**inputs, generation_config=self.generation_config)
                completions = sequences[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(completions, skip_special_tokens=True)
