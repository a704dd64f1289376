"""File contents as the Hub describes them: git blob ids, LFS pointers, safetensors headers, virtual bytes."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".npz",
    ".npy",
)
CHUNK = 1 << 20


@dataclass(frozen=True)
class LfsInfo:
    """The LFS side of a file: content sha256, content size, size of the git pointer file."""

    sha256: str
    size: int
    pointer_size: int


@dataclass(frozen=True)
class VirtualBlob:
    """Deterministic bytes for a file that exists only in a catalog: ``prefix`` then a repeating pattern."""

    size: int
    prefix: bytes
    pattern: bytes

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` in chunks."""
        pos = start
        while pos < end:
            if pos < len(self.prefix):
                chunk = self.prefix[pos : min(end, len(self.prefix))]
            else:
                off = (pos - len(self.prefix)) % len(self.pattern)
                n = min(end - pos, CHUNK)
                reps = (off + n) // len(self.pattern) + 1
                chunk = (self.pattern * reps)[off : off + n]
            yield chunk
            pos += len(chunk)


Source = Path | bytes | VirtualBlob  # where a file's bytes come from


@dataclass(frozen=True)
class FileEntry:
    """One file of a repo, with the ids the Hub reports for it."""

    path: str
    size: int
    oid: str  # git blob sha1 (of the content, or of the LFS pointer for LFS files)
    lfs: LfsInfo | None
    source: Source

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag: sha256 for LFS files, the git blob id otherwise."""
        return self.lfs.sha256 if self.lfs is not None else self.oid


def is_lfs(path: str, size: int) -> bool:
    """Whether the Hub would store this file in LFS (large, or a weights format)."""
    return size > LFS_THRESHOLD or path.lower().endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in for the content in git."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def entry_from_digests(path: str, size: int, sha1: str, sha256: str, source: Source) -> FileEntry:
    """Build the entry from content digests, applying the LFS rule."""
    if not is_lfs(path, size):
        return FileEntry(path, size, sha1, None, source)
    pointer = lfs_pointer(sha256, size)
    return FileEntry(path, size, git_blob_sha1(pointer), LfsInfo(sha256, size, len(pointer)), source)


def inside(path: str | Path, real_folder: str) -> bool:
    """Whether ``path``, every link followed, lies inside ``real_folder`` (a real path)."""
    return os.path.realpath(path).startswith(real_folder.rstrip(os.sep) + os.sep)


def escapes_repo(entry: FileEntry) -> bool:
    """Whether a disk file now resolves outside its repo folder (the folder as linked into the root is allowed
    to be a link; the file, or a folder on its way, turned into a link pointing out since the scan)."""
    src = entry.source
    if not isinstance(src, Path):
        return False
    folder = src.parents[entry.path.count("/")]  # <root>/<org>/<name>, whatever it links to
    return not inside(src, os.path.realpath(folder))


def hash_disk_file(path: str, disk: Path) -> FileEntry:
    """Hash a file on disk in one pass (git sha1 and sha256)."""
    size = disk.stat().st_size
    sha1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    sha256 = hashlib.sha256()
    with disk.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha1.update(chunk)
            sha256.update(chunk)
    return entry_from_digests(path, size, sha1.hexdigest(), sha256.hexdigest(), disk)


def entry_from_bytes(path: str, data: bytes) -> FileEntry:
    """An entry whose content is held in memory (rendered README, config)."""
    return entry_from_digests(path, len(data), git_blob_sha1(data), hashlib.sha256(data).hexdigest(), data)


def virtual_safetensors_prefix(size: int) -> bytes | None:
    """A valid safetensors header for a file of exactly ``size`` bytes holding one tensor ``weight``.

    BF16 when the data length is even, else U8. None when ``size`` is too small for a header.
    """
    # The header length is padded to a multiple of 8 with trailing spaces, which the format allows.
    for pad in range(64, 256, 8):
        data = size - 8 - pad
        if data < 2:
            return None
        dtype, n = ("BF16", data // 2) if data % 2 == 0 else ("U8", data)
        header = json.dumps({"weight": {"dtype": dtype, "shape": [n], "data_offsets": [0, data]}})
        if len(header) <= pad:
            return struct.pack("<Q", pad) + header.encode().ljust(pad, b" ")
    return None


def virtual_blob(seed: str, path: str, size: int) -> VirtualBlob:
    """Deterministic filler for a catalog-only file; ``*.safetensors`` get a parseable header."""
    pattern = hashlib.sha256(seed.encode()).digest() * 128
    prefix = virtual_safetensors_prefix(size) if path.endswith(".safetensors") else None
    return VirtualBlob(size, prefix or b"", pattern)


def virtual_entry(seed: str, path: str, size: int) -> FileEntry:
    """An entry for a catalog-only file. LFS ids are synthetic (hashing gigabytes of filler is pointless)."""
    blob = virtual_blob(seed, path, size)
    if is_lfs(path, size):
        sha256 = hashlib.sha256(f"devhub-virtual\0{seed}\0{path}\0{size}".encode()).hexdigest()
        return entry_from_digests(path, size, "", sha256, blob)
    data = b"".join(blob.read(0, size))
    return entry_from_digests(path, size, git_blob_sha1(data), "", data)


def read_header(entry: FileEntry) -> bytes | None:
    """The raw JSON header of a safetensors file, or None when it has none or is unreadable."""
    if not entry.path.endswith(".safetensors") or entry.size < 8:
        return None
    src = entry.source
    if isinstance(src, VirtualBlob):
        head = src.prefix
    elif isinstance(src, bytes):
        head = src
    else:
        try:
            with src.open("rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                return f.read(n) if 0 < n <= 100 * CHUNK else None
        except OSError:
            return None
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    return head[8 : 8 + n] if 0 < n <= len(head) - 8 else None


def safetensors_parameters(header: bytes) -> dict[str, int]:
    """Parameter counts per dtype from a safetensors header; empty when it is not a well-formed header.

    The Hub reports no ``safetensors`` info for a header it cannot read (a NaN or negative dimension, a shape that
    is not a list, a header that is not a JSON object), and so does devhub: it never answers 500 for one.
    """
    try:
        meta = json.loads(header)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(meta, dict):
        return {}
    counts: dict[str, int] = {}
    for name, tensor in meta.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        dtype = tensor.get("dtype") if isinstance(tensor, dict) else None
        if not isinstance(shape, list) or not isinstance(dtype, str):
            return {}
        n = 1
        for dim in shape:
            if type(dim) is not int or dim < 0:  # NaN, Infinity, 2.5, true, "3": not a dimension
                return {}
            n *= dim
        counts[dtype] = counts.get(dtype, 0) + n
    return counts
