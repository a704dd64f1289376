"""``hubdelta merge-plan --apply OUT``: merge a plan's members into a local folder ``hubdelta add`` embeds.

Members are fetched from the Hub at the revision that was embedded, through the embedder's safe fetch (bounded,
verified, never remote code, never unpickled), and read through its safe loaders (:mod:`~hubdelta.embedder.lora`,
:mod:`~hubdelta.embedder.safeload`). Two outputs:

- **linear over adapters only**: peft's ``add_weighted_adapter(combination_type="cat")``, which concatenates the
  factors (rank = the sum of the ranks), so adapters of different ranks or targets merge *exactly*
  (``Σ wᵢ sᵢ Bᵢ Aᵢ``); written as a LoRA adapter folder.
- **TIES, or any full finetune in the set**: peft's ``ties`` / ``task_arithmetic`` applied by hand to the task
  vectors (:mod:`hubdelta.merge.combine`): peft's own ``ties`` combination of adapters trims A and B separately
  and needs equal ranks, and its ``ties_svd`` refactors the result at a rank (lossy), so neither is TIES of the
  deltas. Written as a full checkpoint: the base's weights plus the merged delta, in the base's dtype.

OUT is written beside itself under a temporary name and renamed into place: a failure leaves nothing there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubdelta.embedder.bases import resolve_base
from hubdelta.embedder.local import base_info_from_folder
from hubdelta.embedder.safety import Limits
from hubdelta.embedder.safety_records import RepoKind
from hubdelta.index.door import reading
from hubdelta.kernel.errors import HubdeltaError, OutputError, UsageError
from hubdelta.kernel.settings import Settings
from hubdelta.merge.combine import adapter_delta, check_method, combine, default_weights, full_merge_bytes
from hubdelta.merge.plan import MergePlan

if TYPE_CHECKING:
    import torch

    from hubdelta.embedder.fetch import FetchedModel

RECIPE = "merge_recipe.json"  # what was merged and how, beside the weights
COPIED = ("config.json", "generation_config.json", "special_tokens_map.json", "chat_template.jinja", "merges.txt")


@dataclass(frozen=True)
class Applied:
    """A merge written to disk."""

    out: Path
    kind: str  # "adapter" or "full"
    method: str
    members: tuple[str, ...]
    weights: tuple[float, ...]
    density: float | None
    base: str
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "kind": self.kind, "method": self.method, "members": list(self.members),
                "weights": list(self.weights), "density": self.density, "base": self.base, "files": self.files,
                "next": f"hubdelta add {self.out} --base {self.base}"}  # fmt: skip


def check_out(out: Path) -> Path:
    """Refuse, before any work, an OUT that exists or whose parent cannot take a new folder.

    Raises:
        UsageError: OUT exists, or its parent folder does not.
        OutputError: the parent cannot be written.
    """
    if out.exists() or out.is_symlink():
        raise UsageError("--apply", f"{out} already exists", fix="give a new folder name (nothing is overwritten)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise UsageError("--apply", f"folder {parent} does not exist", fix="create it, or write elsewhere")
    try:
        Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent)).rmdir()
    except OSError as e:
        raise OutputError(str(out), e.strerror or type(e).__name__, option="--apply") from None
    return out


def _members(settings: Settings, plan: MergePlan) -> list[tuple[str, str]]:
    """(repo id, embedded sha) of each member; a member added from a local folder is refused."""
    ids = list(plan.repo_ids)
    with reading(settings, None) as index:
        vectors = index.vectors.get(plan.space_id, ids)
        records = index.models.get(ids)
    out = []
    for rid in ids:
        record = records.get(rid)
        if record is not None and (record.model.card_summary or "").startswith("local folder"):
            raise HubdeltaError(f"{rid} was added from a local folder: --apply fetches members from the Hub",
                                fix="leave it out with --where \"repo_id != '" + rid + "'\"")  # fmt: skip
        if rid not in vectors:  # removed or hidden between the plan and now
            raise HubdeltaError(f"{rid} has no vector in {plan.space_id} any more", fix="run merge-plan again")
        out.append((rid, vectors[rid].sha or "main"))
    return out


def apply_plan(settings: Settings, plan: MergePlan, out: Path, *, method: str = "linear", density: float = 0.2,
               weights: Sequence[float] | None = None, memory_bytes: int | None = None) -> Applied:  # fmt: skip
    """Merge ``plan``'s members onto their base into the new folder ``out``.

    ``memory_bytes``: what a full merge may hold (default: the machine's available memory); a larger estimate
    is refused before any download.

    Raises:
        UsageError: a bad method, density or weights; OUT exists.
        OutputError: OUT cannot be written.
        ModelRefused / ModelUnavailable: a member is refused by the safety rules or cannot be fetched.
        HubdeltaError: the members cannot be merged (a tensor that does not fit the base), or a full merge would
            need more memory than ``memory_bytes``.
    """
    check_method(method, density)
    check_out(out)
    w = list(weights) if weights is not None else default_weights(method, len(plan.members))
    if len(w) != len(plan.members):
        raise UsageError("weights", f"{len(w)} weights for {len(plan.members)} members", fix="give one a member")
    from hubdelta.embedder.run import fetcher

    members = _members(settings, plan)
    ref = resolve_base(settings, plan.base)
    limits = Limits.from_embed_settings(settings.embed)
    info = base_info_from_folder(ref.folder, ref.repo_id)
    if method != "linear" or any(m.relation != "adapter" for m in plan.members):  # refused before any download
        check_memory(plan, ref.folder, info.weight_shapes, memory_bytes)
    fetch_one = fetcher(settings, limits, info)
    fetched: list[FetchedModel] = []
    try:
        for rid, sha in members:  # one at a time, so a failure still releases those fetched before it
            fetched.append(fetch_one(rid, sha))
        kind = "adapter" if method == "linear" and all(f.kind is RepoKind.ADAPTER for f in fetched) else "full"
        files = _write(out, kind, ref.folder, plan, fetched, method, w, density, limits)
    finally:
        _release(fetched)  # a full finetune's weights leave the cache, as after hubdelta embed
    return Applied(out, kind, method, plan.repo_ids, tuple(w), density if method == "ties" else None, plan.base,
                   files)  # fmt: skip


def _write(out: Path, kind: str, base_folder: Path, plan: MergePlan, fetched: Sequence[FetchedModel], method: str,
           weights: Sequence[float], density: float, limits: Limits) -> dict[str, int]:  # fmt: skip
    """The merge in a temporary folder beside OUT, renamed to OUT once whole; returns its files' sizes."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.absolute().parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make OUT private to this user
        if kind == "adapter":
            _write_cat(tmp, base_folder, plan.base, fetched, weights, limits)
        else:
            _write_full(tmp, base_folder, fetched, method, weights, density, limits)
        members = [{"repo_id": f.repo_id, "sha": f.sha, "weight": x} for f, x in zip(fetched, weights, strict=True)]
        recipe = {"base": plan.base, "space": plan.space_id, "method": method, "kind": kind,
                  "density": density if method == "ties" else None, "members": members}  # fmt: skip
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=2) + "\n")
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        try:
            os.rename(tmp, out)
        except OSError as e:  # OUT appeared meanwhile, or its folder stopped taking writes
            raise OutputError(str(out), e.strerror or type(e).__name__, option="--apply") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def available_memory() -> int | None:
    """The memory the kernel says a new allocation can get without swapping (Linux), else None (unbounded)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(plan: MergePlan, base_folder: Path, shapes: Mapping[str, tuple[int, ...]],
                 memory_bytes: int | None) -> None:  # fmt: skip
    """Refuse a full merge whose peak memory (:func:`~hubdelta.merge.combine.full_merge_bytes`) exceeds the bound.

    Raises:
        HubdeltaError: naming the estimate, the bound and what to do instead.
    """
    bound = memory_bytes if memory_bytes is not None else available_memory()
    if bound is None:
        return
    params = sum(math.prod(s) for s in shapes.values())  # the headers' shapes (a tied head counted twice: safe)
    base_bytes = sum(p.stat().st_size for p in base_folder.glob("*.safetensors"))
    need = full_merge_bytes(params, base_bytes, len(plan.members))
    if need > bound:
        raise HubdeltaError(f"a full merge of {len(plan.members)} models onto {plan.base} needs about "
                            f"{need / 1e9:.2f} GB of memory, {bound / 1e9:.2f} GB is available",
                            fix="merge fewer models (-k), merge adapters only with --method linear (written as an "
                                "adapter), or run on a machine with more memory")  # fmt: skip


def _release(fetched: Sequence[FetchedModel]) -> None:
    from hubdelta.embedder.fetch import release

    for f in fetched:
        release(f)


def _write_cat(tmp: Path, base_folder: Path, base: str, fetched: Sequence[FetchedModel], weights: Sequence[float],
               limits: Limits) -> None:  # fmt: skip
    """Linear over adapters: peft's exact ``cat`` combination, saved as one adapter."""
    from dataclasses import fields

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import save_file

    from hubdelta.embedder.lora import ADAPTER_WEIGHTS, read_adapter
    from hubdelta.embedder.safeload import load_state_dict_safely, safe_adapter_config
    from hubdelta.embedder.training import load_causal_lm

    model: Any = load_causal_lm(base_folder)
    known = {f.name for f in fields(LoraConfig)}
    names = [f"member{i}" for i in range(len(fetched))]
    for f in fetched:  # the embedder's exactness checks (plain LoRA that fits the base), on the unwrapped base
        read_adapter(f.repo_id, f.path, model)
    for name, f in zip(names, fetched, strict=True):
        raw = safe_adapter_config(f.path, limits)
        # the base's name is set on the merged config; here it would only make peft warn of the local folder
        dropped = ("peft_type", "peft_version", "base_model_name_or_path")
        config = LoraConfig(**{k: v for k, v in raw.items() if k in known and k not in dropped})
        if name == names[0]:
            model = get_peft_model(model, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        loaded: Any = set_peft_model_state_dict(model, load_state_dict_safely(f.path / ADAPTER_WEIGHTS, limits), name)
        if loaded.unexpected_keys:
            raise HubdeltaError(f"{f.repo_id}: {len(loaded.unexpected_keys)} tensors do not fit the base "
                                f"({loaded.unexpected_keys[0]})", fix="it cannot be merged onto this base")  # fmt: skip
    model.add_weighted_adapter(names, list(weights), "merged", combination_type="cat")
    state = {k: v.contiguous() for k, v in get_peft_model_state_dict(model, adapter_name="merged").items()}
    save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    merged = model.peft_config["merged"]
    merged.base_model_name_or_path = base
    # peft copies the first member's config (r = lora_alpha = R, scaling 1): the members' own scalings are
    # already folded into the concatenated A, so rsLoRA's alpha/sqrt(R) would scale the delta by sqrt(R)
    merged.use_rslora = False
    merged.save_pretrained(str(tmp))


def member_delta(f: FetchedModel, base_state: dict[str, torch.Tensor], model: Any,
                 limits: Limits) -> dict[str, torch.Tensor]:  # fmt: skip
    """A fetched member's task vector against the base's weights (float32)."""
    from hubdelta.embedder.lora import read_adapter
    from hubdelta.embedder.safeload import load_state_dict_safely

    if f.kind is RepoKind.ADAPTER:
        return adapter_delta(read_adapter(f.repo_id, f.path, model).factors)
    delta: dict[str, torch.Tensor] = {}
    for name in f.weights:
        for key, tensor in load_state_dict_safely(f.path / name, limits).items():
            if key not in base_state:
                continue  # a tied head saved twice, or a buffer: nothing of the base to change
            if tensor.shape != base_state[key].shape:
                raise HubdeltaError(f"{f.repo_id}: {key} is {list(tensor.shape)}, the base's "
                                    f"{list(base_state[key].shape)}: a set across architectures cannot be merged",
                                    fix="choose models of the space's base architecture")  # fmt: skip
            delta[key] = tensor.float() - base_state[key].float()
    return delta


def _write_full(tmp: Path, base_folder: Path, fetched: Sequence[FetchedModel], method: str, weights: Sequence[float],
                density: float, limits: Limits) -> None:  # fmt: skip
    """TIES, or a set with full finetunes: base + merged task vector, saved as a checkpoint of the base's files."""
    from safetensors.torch import save_file

    from hubdelta.embedder.safeload import load_state_dict_safely
    from hubdelta.embedder.training import load_causal_lm

    shards = {p.name: load_state_dict_safely(p, limits) for p in sorted(base_folder.glob("*.safetensors"))}
    base_state = {k: t for s in shards.values() for k, t in s.items()}
    model = load_causal_lm(base_folder)
    merged = combine([member_delta(f, base_state, model, limits) for f in fetched], method, weights, density)
    del model
    stray = sorted(set(merged) - set(base_state))
    if stray:
        raise HubdeltaError(f"the merge changes {stray[0]}, which the base's files do not hold",
                            fix="the members cannot be merged onto this base")  # fmt: skip
    for name, state in shards.items():
        out = {k: (t.float() + merged[k]).to(t.dtype) if k in merged else t for k, t in state.items()}
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp / name), metadata={"format": "pt"})
    for p in base_folder.iterdir():
        if p.name in COPIED or p.name.startswith("tokenizer"):
            shutil.copyfile(p, tmp / p.name)
