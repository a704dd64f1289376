"""Where an index lives: a local folder or an object-storage uri (``s3://bucket/prefix``, ``gs://``, ``az://``).

LanceDB reaches object storage itself (Lance's object store, in Rust): hubdelta passes it ``[index.storage]``
as ``storage_options`` and Lance also reads the standard ``AWS_*`` environment variables and the AWS
credential chain. What hubdelta adds is one-line errors: a wrong endpoint, a missing bucket or missing
credentials surface from LanceDB as a ``ValueError`` holding a Rust debug dump, which
:func:`storage_errors` turns into a :class:`StoreError` naming the uri, the cause and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hubdelta.kernel.errors import StoreError

STORAGE_FIX = (
    "check the bucket in [index] uri and [index.storage] in hubdelta.toml (aws_endpoint, aws_region, "
    'allow_http = "true" for an http endpoint) or the AWS_* environment variables'
)

_CODE = re.compile(r"<Code>(\w+)</Code>")  # the S3 error code in a response body, e.g. NoSuchBucket
_STATUS = re.compile(r"status: (\d{3})")
_CONNECT = re.compile(r'ConnectError\("([^"]+)", ([^,\s]+)')  # reqwest: ("tcp connect error", host:port, ...)
_MESSAGE = re.compile(r'message: "([^"]+)"')


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a local path (or ``file://`` uri) rather than object storage."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path | None:
    """The folder of a local index uri; None for object storage."""
    return Path(uri.removeprefix("file://")) if is_local(uri) else None


def storage_cause(e: BaseException) -> str:
    """The cause of an object-storage failure in a few words, e.g. ``NoSuchBucket (HTTP 404)``."""
    text = str(e)
    code, status = _CODE.search(text), _STATUS.search(text)
    if code:
        return f"{code[1]} (HTTP {status[1]})" if status else code[1]
    if "Failed to get AWS credentials" in text:
        return "no AWS credentials found"
    connect, message = _CONNECT.search(text), _MESSAGE.search(text)
    if connect:
        return f"{connect[1]} to {connect[2]}" + (f": {message[1]}" if message else "")
    if status:
        return f"HTTP {status[1]}"
    first = (text.strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"[:200]


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Turn LanceDB's object-storage failures inside the block into a one-line :class:`StoreError`.

    A local uri passes every exception through unchanged (its errors are plain OSErrors already).
    """
    try:
        yield
    except (OSError, RuntimeError, ValueError) as e:
        if is_local(uri):
            raise
        raise StoreError(f"object storage cannot be reached: {storage_cause(e)}", uri=uri, fix=STORAGE_FIX) from e
