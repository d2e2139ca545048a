"""Encode pipeline values to open file formats; the key's extension records which one.

Keeping the codec in the extension (``poses/deduped/shard=00012.posetable.parquet``) means a
loader needs no Python type annotation, and any tool (DuckDB, pandas, ``safetensors``, ``jq``)
can read the bucket directly. Nothing is pickled: loading never executes stored code.

=====================  =========================  ===========================================
value                  extension                  format
=====================  =========================  ===========================================
``PoseTable``          ``.posetable.parquet``     Parquet, FixedSizeList columns (validated)
``pandas.DataFrame``   ``.parquet``               Parquet via pyarrow (index and dtypes kept)
dict of torch tensors  ``.safetensors``           safetensors (a state dict)
dict / list            ``.json``                  JSON, sorted keys, so bytes are deterministic
bytes                  ``.bin``                   raw
=====================  =========================  ===========================================
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from handsynth.pose_table import PoseTable


class CodecError(ValueError):
    """A value cannot be encoded, or stored bytes cannot be decoded; names the key / type."""


@dataclass(frozen=True)
class Codec:
    """One storage format: which values it takes and how it turns them into bytes and back."""

    ext: str  # with the leading dot, e.g. ".parquet"
    accepts: Callable[[Any], bool]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes, str], Any]  # (data, key for error messages) -> value


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


#: Rows per Parquet row group of a stored table. Readers that stream a table (exports, the
#: training index, shard summaries: ``handsynth.training.iter_annotation_batches``) decode a
#: row group at a time, so this bounds their memory whatever the shard size (one row group per
#: 15,000-row paper shard cost the IH2.6M export 13 MiB more at 30K images than 2,048-row groups).
PARQUET_ROW_GROUP = 2048


def _encode_dataframe(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", compression="zstd", row_group_size=PARQUET_ROW_GROUP)
    return buf.getvalue()


def _decode_dataframe(data: bytes, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def _json_default(value: Any) -> Any:
    """numpy scalars (e.g. a count from ``np.sum``) are stored as their Python value."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, allow_nan=False, default=_json_default,
                      separators=(",", ":")).encode("utf-8")


def _decode_json(data: bytes, key: str) -> Any:
    return json.loads(data.decode("utf-8"))


def _encode_state_dict(tensors: dict[str, torch.Tensor]) -> bytes:
    # safetensors needs dense CPU tensors; detach so parameters with grad are accepted.
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _decode_state_dict(data: bytes, key: str) -> dict[str, torch.Tensor]:
    return load_safetensors(data)


#: Ordered: a value takes the first codec that accepts it; a key the longest matching extension.
CODECS: tuple[Codec, ...] = (
    Codec(".posetable.parquet", lambda v: isinstance(v, PoseTable), lambda v: v.to_parquet_bytes(),
          lambda data, key: PoseTable.from_parquet_bytes(data, where=key)),
    Codec(".parquet", lambda v: isinstance(v, pd.DataFrame), _encode_dataframe, _decode_dataframe),
    Codec(".safetensors", _is_state_dict, _encode_state_dict, _decode_state_dict),
    Codec(".json", lambda v: isinstance(v, (dict, list)), _encode_json, _decode_json),
    Codec(".bin", lambda v: isinstance(v, (bytes, bytearray, memoryview)), bytes, lambda data, key: data),
)
EXTENSIONS: tuple[str, ...] = tuple(c.ext for c in CODECS)


def codec_for_value(value: Any) -> Codec:
    """The codec that stores ``value``; :class:`CodecError` listing the supported types if none."""
    for codec in CODECS:
        if codec.accepts(value):
            return codec
    raise CodecError(
        f"cannot store a value of type {type(value).__module__}.{type(value).__qualname__}: supported are "
        "PoseTable, pandas.DataFrame, dict of torch tensors, JSON-able dict/list, bytes"
    )


def split_extension(key: str) -> tuple[str, Codec]:
    """``(key without extension, codec)``; the longest match wins (``.posetable.parquet``)."""
    matches = [c for c in CODECS if key.endswith(c.ext)]
    if not matches:
        raise CodecError(f"{key}: unknown extension, expected one of {', '.join(EXTENSIONS)}")
    codec = max(matches, key=lambda c: len(c.ext))
    return key[: -len(codec.ext)], codec


def encode(value: Any, where: str = "value") -> tuple[str, bytes]:
    """``(extension, bytes)`` for ``value``; ``where`` names it in errors (e.g. the asset key)."""
    codec = codec_for_value(value)
    try:
        return codec.ext, codec.encode(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CodecError(f"{where}: cannot encode as {codec.ext}: {exc}") from exc


def decode(key: str, data: bytes) -> Any:
    """The value stored at ``key`` (codec chosen by its extension); errors name the key."""
    codec = split_extension(key)[1]
    try:
        return codec.decode(data, key)
    except CodecError:
        raise
    except (ValueError, OSError, SafetensorError, UnicodeDecodeError) as exc:
        raise CodecError(f"{key}: cannot decode {codec.ext}: {exc}") from exc
