"""Typed containers of the RL step: the visual inputs of a batch of prompts and a rollout.

One vocabulary (docs/ARCHITECTURE.md): B prompts, G generations per prompt, P prompt tokens, T
completion tokens. Completion rows are ordered prompt by prompt: row ``i`` belongs to prompt
``i // G`` (``repeat_interleave`` order, as in TRL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class VideoInputs:
    """Pixel inputs of the B prompts of a batch, as the Qwen VL processors emit them.

    Visuals are concatenated over the batch in prompt order (every visual of prompt 0, then of
    prompt 1, ...); within a modality, the patch rows of visual ``k`` follow those of visual ``k - 1``.

    Attributes:
        pixel_values_videos: [N_video_patches, C*T*P*P] float, the flattened patches of every video
            (C = 3 channels, T = temporal patch size, P = patch size), or None (no video).
        video_grid_thw: [V, 3] int64, (t, h, w) patch grid of each of the V videos, or None.
        second_per_grid_ts: [V] float, seconds per temporal grid step of each video (Qwen2.5-VL's
            temporal position ids use it), or None.
        pixel_values: [N_image_patches, C*T*P*P] float, the patches of every still image, or None.
        image_grid_thw: [I, 3] int64, patch grid of each of the I images, or None.
    """

    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for pixels, grid, what in (
            (self.pixel_values_videos, self.video_grid_thw, "video"),
            (self.pixel_values, self.image_grid_thw, "image"),
        ):
            if (pixels is None) != (grid is None):
                raise ValueError(f"VideoInputs: {what} pixels and {what} grid must be given together")
            if grid is not None and int(grid.prod(-1).sum()) != pixels.shape[0]:
                raise ValueError(
                    f"VideoInputs: {what} grids hold {int(grid.prod(-1).sum())} patches but the pixel "
                    f"tensor has {pixels.shape[0]} rows"
                )
        if self.second_per_grid_ts is not None and (
            self.video_grid_thw is None or self.second_per_grid_ts.shape[0] != self.video_grid_thw.shape[0]
        ):
            raise ValueError("VideoInputs: second_per_grid_ts needs one entry per video")

    @classmethod
    def from_batch(cls, batch: Mapping[str, torch.Tensor]) -> VideoInputs | None:
        """The visual fields of a processor output (a ``BatchFeature`` or any mapping); None when the
        batch holds no image and no video (text-only prompts)."""
        names = [f.name for f in fields(cls)]
        values = {name: batch.get(name) for name in names}
        if values["pixel_values_videos"] is None and values["pixel_values"] is None:
            return None
        return cls(**values)

    @property
    def num_videos(self) -> int:
        return 0 if self.video_grid_thw is None else self.video_grid_thw.shape[0]

    @property
    def num_images(self) -> int:
        return 0 if self.image_grid_thw is None else self.image_grid_thw.shape[0]

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """The non-empty fields, named as the models' ``forward`` takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def to(self, device: torch.device | str) -> VideoInputs:
        return replace(self, **{name: value.to(device) for name, value in self.model_kwargs().items()})

    def repeat_per_prompt(
        self,
        videos_per_prompt: list[int],  # [B]
        images_per_prompt: list[int],  # [B]
        repeats: int,
    ) -> VideoInputs:
        """Each prompt's visuals repeated ``repeats`` times in a row, for ``repeats`` copies of each
        prompt in ``repeat_interleave`` order: prompts [a, b] with visuals [A | B] give [A A | B B]
        for the prompts [a a b b]. (The simple paths use this; the lean ones never repeat pixels.)"""
        out = {}
        for pixels_name, grid_name, extra_name, counts in (
            ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", videos_per_prompt),
            ("pixel_values", "image_grid_thw", None, images_per_prompt),
        ):
            grid = getattr(self, grid_name)
            if grid is None:
                continue
            if sum(counts) != grid.shape[0]:
                raise ValueError(
                    f"{grid_name} has {grid.shape[0]} entries but the prompts hold {sum(counts)}"
                )
            patches = grid.prod(-1)  # [V]
            pixel_chunks = getattr(self, pixels_name).split(patches.tolist())
            starts = [sum(counts[:b]) for b in range(len(counts))]
            order = [
                k
                for b, n in enumerate(counts)
                for _ in range(repeats)
                for k in range(starts[b], starts[b] + n)
            ]
            out[pixels_name] = (
                torch.cat([pixel_chunks[k] for k in order]) if order else getattr(self, pixels_name)
            )
            index = torch.tensor(order, dtype=torch.long, device=grid.device)
            out[grid_name] = grid[index]
            if extra_name is not None and getattr(self, extra_name) is not None:
                extra = getattr(self, extra_name)
                out[extra_name] = extra[index.to(extra.device)]
        return replace(self, **out)


@dataclass
class Rollout:
    """G sampled completions for each of B prompts, with everything the loss needs.

    Attributes:
        prompt_ids: [B, P] int64, left padded.
        prompt_mask: [B, P] int64, 1 on prompt tokens, 0 on left padding.
        completion_ids: [B*G, T] int64; row ``i`` is a completion of prompt ``i // G``; after the first
            EOS, whatever ``generate`` padded with.
        completion_mask: [B*G, T] int64, 1 up to and including the first EOS, 0 after it.
        num_generations: G.
        video: the prompt-level visual inputs (each video once, not G times), or None (text only).
        old_logprobs: [B*G, T] float32, log-probs of the completion tokens under the policy that
            sampled them, or None (one gradient step per generation: the loss uses logprobs.detach()).
        ref_logprobs: [B*G, T] float32, the same under the reference model (the bias model for
            CDPO), or None (beta = 0).
        init_logprobs: [B*G, T] float32, the same under the initial model (CDPO's anchor, or to log
            kl_init), or None.
        rewards: reward function name -> [B*G] float32.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    num_generations: int
    video: VideoInputs | None = None
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    init_logprobs: torch.Tensor | None = None
    rewards: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        batch, generations = self.prompt_ids.shape[0], self.num_generations
        if self.prompt_mask.shape != self.prompt_ids.shape:
            raise ValueError(
                f"prompt_mask {tuple(self.prompt_mask.shape)} != prompt_ids {tuple(self.prompt_ids.shape)}"
            )
        if self.completion_ids.shape[0] != batch * generations:
            raise ValueError(
                f"completion_ids has {self.completion_ids.shape[0]} rows, expected B*G = {batch}*{generations}"
            )
        if self.completion_mask.shape != self.completion_ids.shape:
            raise ValueError(
                f"completion_mask {tuple(self.completion_mask.shape)} != completion_ids "
                f"{tuple(self.completion_ids.shape)}"
            )

    @property
    def batch_size(self) -> int:
        """B, the number of prompts."""
        return self.prompt_ids.shape[0]

    @property
    def prompt_index(self) -> torch.Tensor:
        """[B*G] int64, the prompt of each completion row."""
        return torch.arange(self.batch_size, device=self.prompt_ids.device).repeat_interleave(
            self.num_generations
        )
