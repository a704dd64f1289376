"""Safetensors headers from untrusted repos: parse and validate them before any tensor is read (pure).

A safetensors file is ``<u64 little-endian N><N bytes of JSON header><data>``. The header maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data section) plus an optional
``__metadata__`` of strings. The rules below are those of the ``safetensors`` crate's own validation (contiguous,
non-overlapping byte ranges that exactly fill the data section, ``shape x dtype size == end - begin``), applied
here first so that a hostile header is refused with a reason instead of crashing, or fooling, a loader.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_HEADER_BYTES = 100_000_000  # the safetensors crate refuses larger headers too
MAX_TENSORS = 1_000_000
METADATA_KEY = "__metadata__"
TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
# Byte size of every dtype the safetensors crate and torch both read; sub-byte and exotic ones are refused.
DTYPE_SIZES: Mapping[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def quote(name: object, limit: int = 80) -> str:
    """A name from a hostile file, made safe for a one-line reason: repr'd when odd, and shortened."""
    if not isinstance(name, str):
        return repr(name)[:limit]  # r=0, r=None: the JSON value as it came
    text = name
    if not text.isprintable() or "'" in text or not text:
        text = repr(text)[1:-1]
    return f"'{text}'" if len(text) <= limit else f"'{text[: limit - 3]}...'"


def shown(name: str) -> str:
    """A file name as it leads a reason: bare when plain, else quoted like :func:`quote`."""
    plain = name.isprintable() and " " not in name and "'" not in name and 0 < len(name) <= 120
    return name if plain else quote(name, limit=120)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # json.loads would keep the last one silently, while another reader may keep the first.
            raise ValueError(f"duplicate key {quote(key)}")
        out[key] = value
    return out


def parse_header_json(raw: bytes) -> dict[str, Any] | str:
    """Decode a header's JSON bytes into a dict, or return why it is not one (duplicate keys refused)."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        return "header is not UTF-8"
    except ValueError as e:  # JSONDecodeError and duplicate keys
        return f"header is not valid JSON ({str(e)[:80]})"
    if not isinstance(header, dict):
        return f"header is a JSON {type(header).__name__}, not an object"
    return header


def min_header_len(header: Mapping[str, Any]) -> int:
    """A lower bound on the byte length of the JSON this header was decoded from: its compact re-encoding.

    Whitespace, escapes and padding only ever make the original longer.
    """
    try:
        return len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace"))
    except (TypeError, ValueError):
        return 2


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass; 'true' is no dimension


def _tensor_error(name: str, info: Any, data_len: int) -> str | None:
    """Why one tensor entry is invalid, or None."""
    if not isinstance(info, dict) or set(info) != TENSOR_KEYS:
        return f"tensor {quote(name)} is not {{dtype, shape, data_offsets}}"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        return f"tensor {quote(name)} has unknown dtype {quote(dtype)}"
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return f"tensor {quote(name)} has a malformed shape"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        return f"tensor {quote(name)} has malformed data_offsets"
    begin, end = offsets
    if begin > end:
        return f"tensor {quote(name)} has data_offsets [{begin}, {end}] that end before they begin"
    if end > data_len:
        return f"tensor {quote(name)} ends at byte {end}, past the end of the data ({data_len} bytes)"
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if expected != end - begin:
        return f"tensor {quote(name)} is {shape} {dtype} = {expected} bytes but its byte range holds {end - begin}"
    return None


def check_safetensors_header(
    header: Mapping[str, Any],
    file_size: int,
    header_len: int | None = None,
    *,
    max_tensors: int = MAX_TENSORS,
) -> str | None:
    """Validate a decoded safetensors header against the file it came from.

    Args:
        header: the decoded JSON header.
        file_size: the size of the whole file in bytes.
        header_len: the header's byte length N (the file's first 8 bytes). Known for a local file; unknown for a
            header the Hub client parsed remotely, in which case N is bounded below by :func:`min_header_len`
            (so data past the end is still caught) and only overlaps, not gaps, can be detected.
        max_tensors: refuse headers naming more tensors than this.

    Returns:
        None when the header is valid, else the reason (one line, without the file name).
    """
    if header_len is not None:
        if header_len > MAX_HEADER_BYTES:
            return f"header of {header_len} bytes exceeds the {MAX_HEADER_BYTES} byte limit"
        if 8 + header_len > file_size:
            return f"header of {header_len} bytes does not fit in a {file_size} byte file"
    meta = header.get(METADATA_KEY, {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return f"{METADATA_KEY} is not a map of strings"
    tensors = [(k, v) for k, v in header.items() if k != METADATA_KEY]
    if len(tensors) > max_tensors:
        return f"header names {len(tensors)} tensors, over the limit of {max_tensors}"
    data_len = file_size - 8 - (header_len if header_len is not None else min_header_len(header))
    for name, info in tensors:
        error = _tensor_error(name, info, data_len)
        if error:
            return error
    return _layout_error(tensors, data_len, exact=header_len is not None)


def _layout_error(tensors: list[tuple[str, Any]], data_len: int, *, exact: bool) -> str | None:
    """Overlapping byte ranges; with ``exact``, also gaps and trailing bytes (the crate refuses both)."""
    ranges = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in tensors)
    pos, prev = 0, None
    for begin, end, name in ranges:
        if begin < pos:
            return f"tensors {quote(prev)} and {quote(name)} overlap"
        if exact and begin > pos:
            return f"tensor {quote(name)} starts at byte {begin}, leaving a gap after byte {pos}"
        pos, prev = end, name
    if exact and pos != data_len:
        return f"the tensors fill {pos} of the {data_len} data bytes"
    return None


def header_params(header: Mapping[str, Any]) -> int:
    """Total number of elements over every tensor of a header already checked valid."""
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != METADATA_KEY)


def header_shapes(header: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, for a header already checked valid."""
    return {k: tuple(v["shape"]) for k, v in header.items() if k != METADATA_KEY}
