"""The sampling engine: one prefill per prompt, then a static-cache decode loop replayed as a CUDA graph.

``generate`` decodes one token per Python-level forward over a growing cache: on one H200 a Qwen2.5-VL
3B decode step for 8 rows after a 1500-token prompt costs 52.7 ms with a dynamic cache and 16.9 ms with
``cache_implementation="static"`` (DESIGN.md §4), against a floor of about 1.5 ms for reading 7 GB of
bf16 weights. `DecodeEngine` removes the Python and launch overhead:

1. **Prefill** each prompt once with the model's own forward (the vision tower runs there, once per
   video), positions as ``generate`` builds them (text positions and M-RoPE ids from the model's
   ``get_rope_index``, `prefill_positions`); the first token of each of the G completions is drawn
   from its logits.
2. **Static cache**: the prompt's keys and values are copied G times into a preallocated cache of
   ``[layers, 2 (keys, values), rows, kv_heads, prompt + completion, head_dim]``; rows and prompt length are padded up to
   buckets so the shapes, and with them the graphs, repeat from step to step.
3. **Decode step** (`videothinker.models.decode.decode_step`: embedding, text model, lm_head, or
   with fused weights its fused twin `videothinker.models.decode_fused.fused_decode_step`; then
   `videothinker.models.sampling.sample_next` on the device) with every index a device tensor, so on a
   GPU it is captured once in a CUDA graph and replayed; finished rows are tracked on the device (they
   emit ``pad_token_id`` after their EOS) and the loop checks every ``check_every`` steps, not every
   step, whether all rows are done. On a CPU the same step runs eagerly.

Greedy tokens equal ``generate``'s token for token (tests/models/test_engine.py); sampled tokens
follow the same distribution (tests/models/test_sampling.py). Log-probs for the loss never come from
here: the training forward recomputes them.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from videothinker.console import print0, warn
from videothinker.models.decode import (
    DecoderWeights,
    attention_inputs,
    attention_output,
    compiled_parts,
    decode_step,
    decode_unavailable,
    weights_from_model,
)
from videothinker.models.decode_fused import (
    DECODE_ATTENTION,
    compiled_fused_layer,
    fused_decode_step,
    fused_layer,
    fusing_is_free,
)
from videothinker.models.sampling import sample_next
from videothinker.models.vision import modality_type_ids, rope_position_ids, text_position_ids, vlm_body
from videothinker.rl.types import VideoInputs


def make_engine(model: torch.nn.Module, rollout, dtype: torch.dtype | None = None) -> DecodeEngine | None:
    """The engine ``rollout`` (a `videothinker.config.RolloutConfig`) asks for, or None for plain
    ``generate`` (asked for, or the engine cannot serve the model: then with a one-line warning).
    ``dtype``: what decoding computes in (bf16 under bf16 autocast; None: the weights' own)."""
    if rollout.engine == "generate":
        return None
    fuse = rollout.fused_step
    if fuse is None:  # auto: fused where the engine holds a copy of the weights anyway
        fuse = decode_unavailable(model) is None and fusing_is_free(model, dtype)
    engine = DecodeEngine.for_model(
        model,
        dtype=dtype,
        cuda_graphs=rollout.cuda_graphs,
        prompt_bucket=rollout.prompt_bucket,
        check_every=rollout.check_every,
        compile=rollout.compile,
        fuse=fuse,
        decode_attention=rollout.decode_attention,
    )
    if engine is not None:
        print0(engine.memory_report())
    return engine


def check_left_padded(attention_mask: torch.Tensor) -> None:
    """Raise unless every prompt ends at the last position (left padding), as decoding assumes."""
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be left padded (the last position of every prompt is a token)")


def prompt_model_inputs(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, the visual fields and (where the model takes them)
    mm_token_type_ids, which transformers >= 5.17 needs for M-RoPE and processors may omit."""
    out = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    video = VideoInputs.from_batch(inputs)
    if video is not None:
        out |= video.model_kwargs()
        if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
            out["mm_token_type_ids"] = modality_type_ids(inputs["input_ids"], vlm_body(model).config)
    return out


def prefill_positions(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The position ids ``generate`` gives a prompt's prefill, [4, B, P] (text positions counted
    over the mask, then the 3-D M-RoPE ids from the model's ``get_rope_index``), and the position
    [B] of each prompt's first completion token: ``generate`` decodes at the attended-token count
    plus the model's ``rope_deltas`` (max prompt position + 1 - attended count), i.e. right after
    the prompt's largest position; for text-only prompts at the attended-token count."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    text = text_position_ids(mask)  # [B, P]
    attended = mask.long().sum(-1)  # [B]
    rope, deltas = rope_position_ids(vlm_body(model), ids, mask, VideoInputs.from_batch(inputs))
    if rope is None:
        return torch.cat([text.unsqueeze(0), text.unsqueeze(0).expand(3, -1, -1)], dim=0), attended
    return torch.cat([text.unsqueeze(0), rope], dim=0), attended + deltas.view(-1).to(attended.device)


def cache_argument(model: torch.nn.Module) -> str:
    """The name under which the model's forward and ``generate`` take a KV cache: ``cache`` from
    transformers 5.24 on (``past_key_values`` is deprecated there), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def model_output_cache(output):
    """The KV cache a forward returned (``cache`` in transformers >= 5.24, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _cache_layer(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [B, K, P, D] of one layer of a transformers cache."""
    if hasattr(cache, "layers"):
        entry = cache.layers[layer]
        return entry.keys, entry.values
    keys, values = cache[layer]
    return keys, values


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def cache_slots(prompt_slots: int, max_new_tokens: int) -> int:
    """The static cache's length: whole multiples of 64 slots (a length that is not a multiple of 8
    slows the matmul decode attention's ``baddbmm`` about twofold, docs/PERFORMANCE.md)."""
    return _round_up(prompt_slots + max_new_tokens, 64)


def _row_bucket(n: int) -> int:
    """Rows are padded to the next power of two (8 -> 8, 5 -> 8, 12 -> 16), so eval's last, smaller
    batch reuses a graph."""
    return 1 << max(0, (n - 1).bit_length())


@dataclass(eq=False)
class _DecodeState:
    """The device buffers of one (rows, cache length, completion length, sampling mode) bucket; a
    captured graph reads and writes exactly these, so they are refilled in place, never replaced."""

    kv: torch.Tensor  # [L, 2, N, K, S, D]: keys ([:, 0]) and values ([:, 1]) of every layer
    attend: torch.Tensor  # [N, S] bool
    tokens: torch.Tensor  # [N] int64, the input token of the next step
    positions: torch.Tensor  # [N] int64, its rotary position
    write_index: torch.Tensor  # [1] int64, its cache slot
    step: torch.Tensor  # [1] int64, the output column the next step writes
    out: torch.Tensor  # [N, T] int64
    done: torch.Tensor  # [N] bool
    eos: torch.Tensor  # [E] int64
    pad: torch.Tensor  # [] int64
    temperature: torch.Tensor  # [1] float32
    top_p: torch.Tensor  # [1] float32
    greedy: bool
    use_top_p: bool
    graph: torch.cuda.CUDAGraph | None = None

    @property
    def keys(self) -> torch.Tensor:  # [L, N, K, S, D], a view
        return self.kv[:, 0]

    @property
    def values(self) -> torch.Tensor:
        return self.kv[:, 1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.kv, self.attend, self.out))


class DecodeEngine:
    """Samples completions of Qwen VL prompts with a static KV cache and (on a GPU) a CUDA-graph step.

    Args:
        model: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL ``*ForConditionalGeneration`` whose text model has
            plain Linear layers (`decode_unavailable` says why another cannot be served).
        dtype: the dtype decoding reads weights in. None or the weights' own: the model's parameters
            are read directly. Another (bf16 for fp32 master weights): a copy is made, and
            `refresh_weights` must be called after each optimizer step.
        cuda_graphs: capture the decode step in a CUDA graph on a GPU (False: eager, for debugging).
        prompt_bucket: prompt lengths are padded up to a multiple of this.
        check_every: decode steps between checks that every row has finished (each check waits for
            the device).
        max_states: buckets whose buffers (and graphs) are kept; the least recently used goes first.
        compile: run the decode layer through ``torch.compile`` (fused norms, rotary and residuals;
            the first step compiles): the whole fused layer with ``fuse`` (`compiled_fused_layer`),
            else the simple step's parts before and after attention (`compiled_parts`).
        fuse: hold q/k/v and gate/up weights fused, one product each (`weights_from_model`), and
            decode with the fused step (`videothinker.models.decode_fused`: about a third of the
            kernels a layer).
        decode_attention: the fused step's attention over the cache (`cache_attention`): ``matmul``
            (the default: the fastest compiled, docs/PERFORMANCE.md), ``sdpa`` or ``flex`` (torch's
            flex attention, compiled on the first step); the simple step always calls SDPA.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        dtype: torch.dtype | None = None,
        cuda_graphs: bool = True,
        prompt_bucket: int = 256,
        check_every: int = 16,
        max_states: int = 2,
        compile: bool = False,
        fuse: bool = False,
        decode_attention: str = "matmul",
    ):
        if prompt_bucket < 1 or check_every < 1 or max_states < 1:
            raise ValueError("prompt_bucket, check_every and max_states must be >= 1")
        if decode_attention not in DECODE_ATTENTION:
            raise ValueError(f"decode_attention must be one of {DECODE_ATTENTION}, got {decode_attention!r}")
        self.decode_attention = decode_attention
        self.model = model
        self.weights: DecoderWeights = weights_from_model(model, dtype, fuse=fuse)
        self.cuda_graphs = cuda_graphs and self.weights.device.type == "cuda"
        self.prompt_bucket, self.check_every, self.max_states = prompt_bucket, check_every, max_states
        self._states: OrderedDict[tuple, _DecodeState] = OrderedDict()
        self.fused_step, self.compiled = fuse, compile
        self.parts = compiled_parts() if compile and not fuse else (attention_inputs, attention_output)
        self.layer = compiled_fused_layer() if compile and fuse else fused_layer
        self.graph_captures = 0  # how many graphs were captured (a new bucket captures one)

    @classmethod
    def for_model(cls, model: torch.nn.Module, **kwargs) -> DecodeEngine | None:
        """An engine for ``model``, or None with a one-line warning when it cannot serve it (the
        caller then samples with ``generate``)."""
        reason = decode_unavailable(model)
        if reason is not None:
            warn(f"rollout.engine=graph cannot serve {type(model).__name__} ({reason}); using generate")
            return None
        return cls(model, **kwargs)

    def refresh_weights(self) -> None:
        """Cast the model's parameters into the engine's copy (after an optimizer step)."""
        self.weights.refresh()

    def memory_report(self) -> str:
        """One line: which weights decoding reads (and the copy's size) and the static caches held."""
        w = self.weights
        if w.copies:
            source = ", gathered from its shards" if w.gathered else ""
            weights = f"a {str(w.dtype).removeprefix('torch.')} copy of the text model{source} ({w.copy_bytes / 2**30:.2f} GiB, refreshed after each optimizer step)"
        else:
            weights = "the model's own weights (no copy)"
        caches = sum(s.nbytes for s in self._states.values())
        graphs = "CUDA graphs" if self.cuda_graphs else "eager steps"
        graphs = f"the fused step, {graphs}" if self.fused_step else graphs
        graphs = f"compiled, {graphs}" if self.compiled else graphs
        if self.fused_step and self.decode_attention != "sdpa":
            graphs = f"{self.decode_attention} attention, {graphs}"
        return f"decode engine: reads {weights}; {graphs}; static caches {caches / 2**30:.2f} GiB"

    # -------------------------------------------------------------------------------------- decode
    @torch.no_grad()
    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        num_generations: int = 1,
        *,
        max_new_tokens: int,
        eos_token_ids: int | Sequence[int],
        pad_token_id: int,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> torch.Tensor:
        """``num_generations`` completions of each of B left-padded prompts.

        Args:
            inputs: processor output (input_ids [B, P], attention_mask [B, P], visual fields).
            num_generations: G; greedy completions of a prompt are all the same.
            max_new_tokens: T_max, most tokens per completion.
            eos_token_ids, pad_token_id: tokens ending a completion; what follows the end.
            do_sample, temperature, top_p: False for greedy; else temperature / nucleus sampling.

        Returns:
            completion_ids [B*G, T] int64 (row ``i`` belongs to prompt ``i // G``), T the length of
            the longest completion (with its EOS) or max_new_tokens; after a row's EOS, pad_token_id.
        """
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        check_left_padded(mask)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        B, P = ids.shape
        G = num_generations
        eos = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
        greedy = not do_sample
        use_top_p = do_sample and top_p < 1.0

        # 1. prefill: each prompt once, the model's own forward
        position_ids, first_positions = prefill_positions(self.model, inputs)
        kwargs = prompt_model_inputs(self.model, inputs) | {"position_ids": position_ids, "use_cache": True}
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kwargs["logits_to_keep"] = 1
        output = self.model(**kwargs)
        cache = model_output_cache(output)
        if cache is None:
            raise ValueError("the prefill returned no KV cache (gradient checkpointing in training mode?)")
        first_logits = output.logits[:, -1].float().repeat_interleave(G, dim=0)  # [B*G, V]

        # 2. the bucket's buffers, filled with this batch
        w = self.weights
        N, P_cache = _row_bucket(B * G), _round_up(P, self.prompt_bucket)
        S = cache_slots(P_cache, max_new_tokens)
        state = self._state((N, S, max_new_tokens, greedy, use_top_p, tuple(eos)))
        state.temperature.fill_(temperature)
        state.top_p.fill_(top_p)
        first = sample_next(
            first_logits,
            greedy=greedy,
            temperature=state.temperature,
            top_p=state.top_p if use_top_p else None,
        )
        self._load(state, cache, mask, first_positions, first, G, P_cache, pad_token_id)

        # 3. decode: one token per step, done rows checked every check_every steps
        autocast_off = torch.autocast(w.device.type, enabled=False)
        step = 1
        with autocast_off:
            while step < max_new_tokens:
                if state.graph is not None:
                    state.graph.replay()
                else:
                    self._advance(state)
                step += 1
                if step % self.check_every == 0 and bool(state.done.all()):
                    break
        return self._completions(state, B * G)

    def _state(self, key: tuple) -> _DecodeState:
        """The buffers (and graph) of a bucket, made on first use; at most ``max_states`` are kept."""
        state = self._states.get(key)
        if state is None:
            while len(self._states) >= self.max_states:
                self._states.popitem(last=False)
            state = self._states[key] = self._new_state(key)
            N, S = key[:2]
            print0(
                f"decode engine: {N} rows x {S} cache slots ({state.nbytes / 2**30:.2f} GiB)"
                + (", decode step captured in a CUDA graph" if state.graph is not None else "")
            )
        self._states.move_to_end(key)
        return state

    def _new_state(self, key: tuple) -> _DecodeState:
        N, S, T, greedy, use_top_p, eos = key
        w = self.weights
        dev = w.device
        cache_shape = (w.num_layers, 2, N, w.num_kv_heads, S, w.head_dim)
        state = _DecodeState(
            kv=torch.zeros(cache_shape, dtype=w.dtype, device=dev),
            attend=torch.zeros(N, S, dtype=torch.bool, device=dev),
            tokens=torch.zeros(N, dtype=torch.long, device=dev),
            positions=torch.zeros(N, dtype=torch.long, device=dev),
            write_index=torch.zeros(1, dtype=torch.long, device=dev),
            step=torch.ones(1, dtype=torch.long, device=dev),
            out=torch.zeros(N, T, dtype=torch.long, device=dev),
            done=torch.zeros(N, dtype=torch.bool, device=dev),
            eos=torch.tensor(list(eos), dtype=torch.long, device=dev),
            pad=torch.zeros((), dtype=torch.long, device=dev),
            temperature=torch.ones(1, dtype=torch.float32, device=dev),
            top_p=torch.ones(1, dtype=torch.float32, device=dev),
            greedy=greedy,
            use_top_p=use_top_p,
        )
        if self.cuda_graphs and T > 1:
            try:
                state.graph = self._capture(state)
            except RuntimeError as e:  # a kernel that cannot be captured on this torch / GPU
                warn(f"decode engine: CUDA graph capture failed ({e}); decoding with eager steps")
                self.cuda_graphs = False
        return state

    def _capture(self, state: _DecodeState) -> torch.cuda.CUDAGraph:
        """Warm the step up on a side stream (kernel selection, allocator), then capture it once.
        The warm-up writes into the buffers; `_load` refills every one of them before use."""
        state.attend[:, 0] = True  # no row attends to nothing while warming up
        state.step.zero_()
        # The warm-up draws random numbers; put the generator back afterwards, so a run that captures
        # at this step samples what a run that already had the graph samples (exact resume).
        rng = torch.cuda.get_rng_state()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.autocast("cuda", enabled=False):
            for _ in range(2):
                self._advance(state)
                state.step.zero_()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.autocast("cuda", enabled=False):
            self._advance(state)
        torch.cuda.set_rng_state(rng)
        self.graph_captures += 1
        return graph

    def _advance(self, s: _DecodeState) -> None:
        """One decode step on the state's buffers, in place: the captured graph's body."""
        if self.fused_step:
            logits = fused_decode_step(
                self.weights,
                s.tokens,
                s.positions,
                s.kv,
                s.write_index,
                s.attend,
                self.layer,
                self.decode_attention,
            )
        else:
            logits = decode_step(
                self.weights, s.tokens, s.positions, s.keys, s.values, s.write_index, s.attend, self.parts
            )
        token = sample_next(
            logits, greedy=s.greedy, temperature=s.temperature, top_p=s.top_p if s.use_top_p else None
        )
        token = torch.where(s.done, s.pad, token)
        s.out.index_copy_(1, s.step, token.unsqueeze(1))
        s.done |= (token.unsqueeze(1) == s.eos).any(dim=1)
        s.tokens.copy_(token)
        s.positions += 1
        s.write_index += 1
        s.step += 1

    def _load(
        self,
        s: _DecodeState,
        cache,
        mask: torch.Tensor,  # [B, P]
        first_positions: torch.Tensor,  # [B]
        first: torch.Tensor,  # [B*G]
        G: int,
        P_cache: int,
        pad_token_id: int,
    ) -> None:
        """Refill every buffer of the state for a new batch: the prompt's keys and values G times at
        the end of the prompt region, what each row attends to, the first tokens, the counters."""
        B, P = mask.shape
        rows = B * G
        start = P_cache - P
        s.kv.zero_()
        for layer in range(self.weights.num_layers):
            k, v = _cache_layer(cache, layer)  # [B, K, P, D]
            s.keys[layer, :rows, :, start:P_cache].copy_(k.repeat_interleave(G, dim=0))
            s.values[layer, :rows, :, start:P_cache].copy_(v.repeat_interleave(G, dim=0))
        s.attend.zero_()
        s.attend[:rows, start:P_cache] = mask.bool().repeat_interleave(G, dim=0)
        s.attend[rows:, 0] = True  # padding rows attend to one zero slot (no empty softmax)
        s.pad.fill_(pad_token_id)
        s.out.fill_(pad_token_id)
        s.out[:rows, 0] = first
        s.tokens.zero_()
        s.tokens[:rows] = first
        s.done.fill_(True)
        s.done[:rows] = (first.unsqueeze(1) == s.eos).any(dim=1)
        s.positions.zero_()
        s.positions[:rows] = first_positions.to(s.positions.device).repeat_interleave(G)
        s.write_index.fill_(P_cache)
        s.step.fill_(1)

    def _completions(self, s: _DecodeState, rows: int) -> torch.Tensor:
        """The first ``rows`` rows of the output, cut after the longest completion's EOS."""
        out = s.out[:rows]
        is_eos = (out.unsqueeze(-1) == s.eos).any(-1)  # [rows, T]
        ended = is_eos.any(dim=1)
        lengths = torch.where(ended, is_eos.int().argmax(dim=1) + 1, out.shape[1])
        return out[:, : int(lengths.max())].clone()
