"""Reading the tensors of a CTranslate2 ``model.bin`` (the format faster-whisper models ship in).

CTranslate2 offers no API to read a loaded model's weights, and the emotion model needs the Whisper
encoder's inner layers, which ``ctranslate2.models.Whisper.encode`` does not return. The file format
is simple and stable (binary version 6, written by ``ctranslate2.specs.model_spec``): a header,
then each variable as name, shape, type id, byte count and raw little-endian data, then aliases.

Weights quantised to int8 (a ``<name>_scale`` variable beside them) are dequantised on read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Type ids in the order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_TYPES: tuple[type[np.generic] | None, ...] = (
    np.float32,
    np.int8,
    np.int16,
    np.int32,
    np.float16,
    None,  # bfloat16: no numpy type; not used by the models here
)
SUPPORTED_VERSIONS = range(5, 7)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands (one-line message)."""


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def unpack(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.offset)
        except struct.error:
            raise CT2FormatError(f"{self.path}: truncated CTranslate2 model file") from None
        self.offset += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        length = self.unpack("H")
        raw = self.data[self.offset : self.offset + length - 1]
        self.offset += length
        return raw.decode("utf-8")

    def take(self, count: int) -> int:
        start = self.offset
        if start + count > len(self.data):
            raise CT2FormatError(f"{self.path}: truncated CTranslate2 model file")
        self.offset += count
        return start


def _variables(path: Path, data: bytes) -> Iterator[tuple[str, np.ndarray]]:
    reader = _Reader(data, path)
    version = reader.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(f"{path}: CTranslate2 binary version {version} is not supported")
    reader.string()  # spec name, e.g. WhisperSpec
    reader.unpack("I")  # spec revision
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        type_id = reader.unpack("B")
        size = reader.unpack("I")
        start = reader.take(size)
        dtype = _TYPES[type_id] if type_id < len(_TYPES) else None
        if dtype is None:
            raise CT2FormatError(f"{path}: variable {name} has an unsupported type id {type_id}")
        count = size // np.dtype(dtype).itemsize
        yield name, np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)


def read_variables(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The float32 tensors of ``path`` whose names start with ``prefix`` (int8 weights
    dequantised with their scales; other integer variables kept as they are)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CT2FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    raw = {name: value for name, value in _variables(path, data) if name.startswith(prefix)}
    tensors: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(f"{name}_scale")
        if value.dtype == np.int8 and scale is not None:
            # Per-row scales: the int8 value times 1/scale gives the float weight.
            tensors[name] = value.astype(np.float32) / scale.astype(np.float32).reshape(-1, 1)
        elif value.dtype in (np.float16, np.float32):
            tensors[name] = value.astype(np.float32)
        else:
            tensors[name] = value.copy()
    if not tensors:
        raise CT2FormatError(f"{path}: no variables named {prefix}*")
    return tensors
