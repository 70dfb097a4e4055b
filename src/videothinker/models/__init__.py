"""Models: loading checkpoints by local path, tiny real-architecture models, and model inputs.

- `loading`: `load_model`, `load_processor` and what other modules ask of a model (family, eos ids,
  pixel grid).
- `tiny`: `build_tiny_model`, random-init Qwen2-VL / Qwen2.5-VL / Qwen3-VL at width ~64 for tests,
  the demo and benchmarks.
- `inputs`: `build_inputs`, prompts + sampled frames -> the processor's tensors.
"""
