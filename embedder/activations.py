"""Probe activations of real models: a base held resident, adapters batched on it, full models loaded one by one.

The numeric core of the embedder. A :class:`ResidentBase` loads the base checkpoint and its tokenizer once and
tokenizes the probe set once into a left-padded batch. Activations come from the decoder alone (the LM head's
logits over the vocabulary are never needed) at the space's layer and token position:

- the base: one forward over the P probes;
- LoRA adapters: read from their files and checked against the base (:mod:`hubdelta.embedder.lora`), then ONE
  forward over (adapters × probes) rows in which forward hooks add each row group's own LoRA delta with batched
  matmuls, acting only on the calling thread's adapters; the base weights are never merged into;
- full finetunes and merges: a separate model with the same probe batch, freed afterwards.

Every change to a model (LoRA hooks, a truncated layer stack) is made inside a context manager that undoes it in
``finally``, as TransformerLens does with its hooks; a resident base holds its hooks and its cut layer stack
until it is closed, so that lanes (:mod:`~hubdelta.embedder.lanes`) can run forwards through it at once.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from hubdelta.embedder.delta import left_pad, pool_positions, position_ids
from hubdelta.embedder.difference import decoder_linears, recording, to_difference
from hubdelta.embedder.local import base_info_from_folder, check_full_folder
from hubdelta.embedder.lora import check_adapter as check_adapter  # re-exported: callers check before fetching
from hubdelta.embedder.lora import delta_hooks, lora_deltas, read_adapter, stack_factors
from hubdelta.embedder.options import resolve_device
from hubdelta.embedder.packed import kernel_dtype, own_memory, pack_linears
from hubdelta.embedder.probes import PAPER_PROBES, ProbeSet
from hubdelta.embedder.runtime import hand_back_freed_memory
from hubdelta.embedder.safety_records import BaseInfo
from hubdelta.embedder.space import Space
from hubdelta.kernel.errors import EmbedError, ModelRefused

log = structlog.get_logger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ProbeBatch:
    """A probe set tokenized once: left-padded rows, their attention mask and per-row positions."""

    input_ids: torch.Tensor  # (P, T) int64
    attention_mask: torch.Tensor  # (P, T) int64, 1 on real tokens
    position_ids: torch.Tensor  # (P, T) int64, counted from each row's first real token

    @classmethod
    def from_token_ids(cls, token_ids: list[list[int]], pad_id: int) -> ProbeBatch:
        """Left-pad per-probe token ids (each tokenized alone, as the paper's reference code does)."""
        ids, mask = left_pad(token_ids, pad_id)  # (P, T), (P, T)
        return cls(ids, mask, position_ids(mask))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def repeat(self, n: int) -> ProbeBatch:
        """The batch ``n`` times over, grouped by repeat: row ``i * P + p`` is probe ``p``."""
        return ProbeBatch(*(t.repeat(n, 1) for t in (self.input_ids, self.attention_mask, self.position_ids)))

    def to(self, device: torch.device) -> ProbeBatch:
        """The same batch on ``device``."""
        return ProbeBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids)))


def text_config(model_dir: Path) -> PretrainedConfig:
    """The (text) config of a local checkpoint, read without running any code from it."""
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    return config.get_text_config()


def torch_device(device: str | torch.device) -> torch.device:
    """Where a resident model runs: ``auto`` (left unresolved by the options, so torch is imported late) is
    resolved here, by :func:`~hubdelta.embedder.options.resolve_device`'s rule."""
    return torch.device(resolve_device(device) if device == "auto" else device)


def load_causal_lm(model_dir: Path, dtype: torch.dtype, device: torch.device) -> PreTrainedModel:
    """A local safetensors checkpoint, never remote code, in eval mode without gradients.

    The attention implementation is ours, never the config's: an untrusted ``attn_implementation`` could name a
    kernel repo on the Hub (code) or a package that is not installed. sdpa is transformers' default; eager where
    an architecture lacks it.
    """
    for attn in ("sdpa", "eager"):
        try:
            model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                model_dir,
                dtype=dtype,
                device_map=device,
                trust_remote_code=False,
                use_safetensors=True,
                local_files_only=True,
                attn_implementation=attn,
            )
            return model.eval().requires_grad_(False)
        except ValueError as e:
            if attn != "sdpa" or "sdpa" not in str(e).lower():
                raise
    raise AssertionError("unreachable: eager either loads or raises")


@contextmanager
def decoder_at(model: PreTrainedModel, layer: int | None) -> Iterator[nn.Module]:
    """The model's decoder (no LM head), cut to output the residual stream after ``layer`` decoder layers.

    ``None`` leaves it whole: the output is the final layer after the final norm. Otherwise the layer stack
    is truncated to its first ``layer`` layers and the final norm is skipped, and both are restored on exit.
    """
    decoder = model.get_decoder()
    if layer is None:
        yield decoder
        return
    layers, norm = getattr(decoder, "layers", None), getattr(decoder, "norm", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(norm, nn.Module):
        raise EmbedError(f"{type(decoder).__name__} has no `layers` and `norm`: only final-layer spaces work for it")
    assert 1 <= layer <= len(layers), (layer, len(layers))
    decoder.layers, decoder.norm = layers[:layer], nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = layers, norm


def probe_activations(model: PreTrainedModel, batch: ProbeBatch, space: Space) -> torch.Tensor:
    """Pooled activations of ``model`` on ``batch`` at the space's layer and position.

    Returns:
        ``(B, C)`` float32 on the CPU.
    """
    with torch.inference_mode(), decoder_at(model, space.layer) as decoder:
        return pooled_activations(decoder, batch, space)


def pooled_activations(decoder: nn.Module, batch: ProbeBatch, space: Space) -> torch.Tensor:
    """:func:`probe_activations` of a decoder already cut to the space's layer (:func:`decoder_at`), in the
    caller's inference mode. Returns ``(B, C)`` float32 on the CPU."""
    out = decoder(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state  # (B, T, C)
    assert hidden.shape == (*batch.input_ids.shape, space.dim), (hidden.shape, space.dim)
    return pool_positions(hidden, batch.attention_mask, space.position).cpu()  # (B, C)


def probe_batch(tokenizer: Any, probes: ProbeSet) -> ProbeBatch:
    """The probes as one batch: each tokenized alone with the tokenizer's default special tokens (the reference's
    way), then left-padded with the pad token (else end-of-text, else 0)."""
    pad = tokenizer.pad_token_id
    pad = tokenizer.eos_token_id if pad is None else pad
    token_ids = [tokenizer(text)["input_ids"] for text in probes.texts]
    return ProbeBatch.from_token_ids(token_ids, 0 if pad is None else pad)


def check_fits(
    config: PretrainedConfig,
    space: Space,
    *,
    item: str,
    base: PretrainedConfig | None = None,
    batch: ProbeBatch | None = None,
) -> None:
    """Refuse a checkpoint whose shape cannot give vectors of ``space`` (or differs from its ``base``).

    Raises:
        EmbedError: hidden size, depth or vocabulary do not fit.
    """
    if config.hidden_size != space.dim:
        raise EmbedError(f"hidden size {config.hidden_size} is not the space's {space.dim}", item=item)
    layers = config.num_hidden_layers
    if space.layer is not None and space.layer > layers:
        raise EmbedError(f"layer {space.layer} is deeper than its {layers} layers", item=item)
    if base is not None and layers != base.num_hidden_layers:
        raise EmbedError(f"it has {layers} layers, the base {base.num_hidden_layers}", item=item)
    if batch is not None and int(batch.input_ids.max()) >= config.vocab_size:
        raise EmbedError(f"its vocabulary of {config.vocab_size} lacks the probes' token ids", item=item)


class ResidentBase:
    """A base model held in memory for one space, with its probe batch; the source of every activation.

    Use as a context manager (or call :meth:`close`) to free the model. Threads may call
    :meth:`adapter_activations` at once (lanes, :mod:`~hubdelta.embedder.lanes`): the LoRA hooks stay on the base
    and act on the factors of the thread running the forward, the layer stack is cut once, and full models
    load one at a time.
    """

    def __init__(
        self,
        base_dir: Path,
        space: Space,
        probes: ProbeSet = PAPER_PROBES,
        *,
        device: str | torch.device = "cpu",
        prepack: bool = True,
    ) -> None:
        """Load the base checkpoint and tokenizer from ``base_dir`` and tokenize the probes once.

        Args:
            base_dir: a local checkpoint folder (config, safetensors weights, tokenizer).
            space: the space to embed in; its dtype decides the weights' and the compute's dtype.
            probes: the probe set named by ``space``.
            device: where the model runs (``auto``: CUDA when torch sees a GPU).
            prepack: on a CPU, run the decoder's Linears on weights laid out once for oneDNN
                (:mod:`~hubdelta.embedder.packed`); false keeps ``F.linear``.

        Raises:
            EmbedError: ``probes`` is not the space's probe set, or the checkpoint does not fit the space.
        """
        if not space.matches(probes):
            raise EmbedError(f"probe set {probes.version}/{probes.hash} is not the space's", item=space.id)
        self.base_dir = Path(base_dir)
        self.space = space
        self.probes = probes
        self.device = torch_device(device)
        self.prepack = prepack
        # Activations are fp32 in every space; a bfloat16 space runs the Linears' matmuls on the difference to the
        # base in bf16 (see hubdelta.embedder.difference), so the base itself is loaded and run in fp32.
        self.dtype = TORCH_DTYPES[space.dtype]
        self.config = text_config(self.base_dir)
        check_fits(self.config, space, item=space.base_repo)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_dir, trust_remote_code=False, local_files_only=True)
        self.batch = probe_batch(self.tokenizer, probes).to(self.device)
        model = load_causal_lm(self.base_dir, torch.float32, self.device)
        self._model: PreTrainedModel | None = model
        self._modules = dict(model.named_modules())  # listed whole, before the layer stack is cut
        self._full_model = threading.Lock()  # full models one at a time, whatever the lanes
        linears = decoder_linears(model)
        if prepack:  # before the base's forward: the base and every model compared with it run the same kernels
            pack_linears(linears)
        if self.dtype == torch.float32:
            self._base_acts = probe_activations(model, self.batch, self.space)  # (P, C)
        else:
            with recording(linears) as records:
                self._base_acts = probe_activations(model, self.batch, self.space)  # (P, C), fp32
            to_difference(linears, records, self.dtype, prepack=prepack)
            if kernel_dtype(self.device, self.dtype) != self.dtype:  # said once a base: a user picks the dtype
                log.warning("embed.no_bf16_kernels", space=space.id, dtype=space.dtype,
                            why="this CPU has no bf16 matmul kernels: the space's bf16 math runs on fp32 ones, "
                            "no faster than a float32 space, whose vectors are exact")  # fmt: skip
        if prepack or self.dtype != torch.float32:  # the checkpoint's own Linear weights are no longer used
            own_memory(model)
            hand_back_freed_memory()
        # For the base's lifetime, not per call: lanes run forwards at once, and neither may change under another.
        self._held = ExitStack()
        hooked = [name for name, m in self._modules.items() if type(m) is nn.Linear]  # LoRA's only targets
        self._held.enter_context(delta_hooks(model, hooked))  # no-ops while no adapter is set in the thread
        self._decoder = self._held.enter_context(decoder_at(model, space.layer))

    def __enter__(self) -> ResidentBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the base model; later calls raise."""
        if self._model is not None:
            self._held.close()
        self._model = None
        gc.collect()

    @property
    def model(self) -> PreTrainedModel:
        """The resident base: its LoRA hooks act on no row outside :meth:`adapter_activations`; for a space at an
        intermediate layer, its layer stack stops there and its final norm is an identity."""
        if self._model is None:
            raise EmbedError("the resident base was closed", item=self.space.id)
        return self._model

    @functools.cached_property
    def base_info(self) -> BaseInfo:
        """The base's tensor names and shapes (its headers): what a full model must hold, shape for shape."""
        return base_info_from_folder(self.base_dir, self.space.base_repo)

    def base_activations(self) -> torch.Tensor:
        """The base's pooled activations, one row per probe, as computed in fp32 when the base was loaded.

        Returns:
            ``(P, C)`` float32 on the CPU.
        """
        self.model  # noqa: B018 -- raises once closed
        return self._base_acts.clone()

    def adapter_activations(self, adapters: Mapping[str, Path]) -> dict[str, torch.Tensor]:
        """Pooled activations of several LoRA adapters on the resident base, in ONE forward (in this thread).

        Every adapter is read and checked against the base before the forward. Each adapter's rows see only
        that adapter (dense per-group deltas, see :mod:`hubdelta.embedder.lora`), so a result does not depend
        on which adapters share the batch, nor on what other threads run at the same time. The batch is
        ``len(adapters) * P`` rows: the caller chooses how many adapters go in one call.

        Args:
            adapters: a folder (``adapter_config.json`` + ``adapter_model.safetensors``) per caller-chosen key.

        Returns:
            ``(P, C)`` float32 on the CPU per key, in ``adapters``' order.

        Raises:
            EmbedError: an adapter cannot be applied exactly (see :func:`~hubdelta.embedder.lora.read_adapter`).
        """
        if not adapters:
            return {}
        model = self.model
        loaded = [read_adapter(key, Path(path), model, self._modules) for key, path in adapters.items()]
        k, p = len(loaded), len(self.batch)
        stacked = stack_factors(loaded, torch.float32, self.device)  # added to fp32 outputs in every space
        with torch.inference_mode(), lora_deltas(model, stacked, k):  # row group i (rows i*P..i*P+P-1): adapter i
            pooled = pooled_activations(self._decoder, self.batch.repeat(k), self.space)  # (K*P, C)
        per_adapter = pooled.view(k, p, -1)  # (K, P, C)
        return {key: per_adapter[i].clone() for i, key in enumerate(adapters)}

    def model_activations(self, model_dir: Path, *, item: str | None = None) -> torch.Tensor:
        """Pooled activations of a full finetune or merge of the base, loaded for this call and then freed.

        Args:
            model_dir: a local checkpoint folder with safetensors weights.
            item: a name for errors (e.g. the repo id).

        Returns:
            ``(P, C)`` float32 on the CPU.

        Raises:
            EmbedError: the model's shape does not fit the base's space.
        """
        check_fits(
            text_config(Path(model_dir)), self.space, item=item or str(model_dir), base=self.config, batch=self.batch
        )
        refusal = check_full_folder(Path(model_dir), self.base_info)
        if refusal is not None:
            raise ModelRefused(item or str(model_dir), refusal.reason, rule=refusal.rule, file=refusal.file)
        # fp32 on a CPU in every space: one model's P rows gain little from bf16, and its deltas would reach only
        # cosine ~0.99 to fp32 (the base's recorded inputs are for the base's weights, not this model's).
        dtype = torch.float32 if self.device.type == "cpu" else self.dtype
        with self._full_model:
            return self._full_activations(Path(model_dir), item or str(model_dir), dtype)

    def _full_activations(self, model_dir: Path, item: str, dtype: torch.dtype) -> torch.Tensor:
        try:
            model = load_causal_lm(model_dir, dtype, self.device)
        except (RuntimeError, ValueError, OSError, KeyError, TypeError, ImportError) as e:
            first = " ".join(str(e).split())[:160]  # transformers' own text runs to many lines
            raise EmbedError(f"config.json and its weights do not load together ({type(e).__name__}: {first})",
                             item=item) from e  # fmt: skip
        try:
            if self.prepack:  # the base's kernels: an exact copy of the base gives exactly 0
                pack_linears(decoder_linears(model))
            return probe_activations(model, self.batch, self.space)
        finally:
            del model
            gc.collect()
