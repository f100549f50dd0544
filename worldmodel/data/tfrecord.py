"""TFRecord files and ``tf.train.Example`` messages, read and written without TensorFlow.

Framing of one record (all integers little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

``data`` is a serialised ``tf.train.Example``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # map entry: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Every framing check (length CRC, data CRC, truncation) raises :class:`DataError` naming the file,
the record number and its byte offset.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from worldmodel.data.crc32c import masked_crc32c
from worldmodel.errors import DataError

Feature = bytes | list[bytes] | np.ndarray  # bytes → bytes_list; float array → float_list; int → int64_list

# --------------------------------------------------------------------------------------------- framing


def index_records(path: str | os.PathLike, f: BinaryIO | None = None) -> list[tuple[int, int]]:
    """Scan a TFRecord file's framing: ``[(data_offset, data_length), ...]``.

    Reads only the 12-byte headers (seeking over the data), checks each length CRC and that every
    record fits in the file. Data CRCs are checked by :func:`read_record`.
    """
    path = Path(path)
    own = f is None
    if own:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise DataError(f"{path}: TFRecord file not found") from None
    try:
        size = os.fstat(f.fileno()).st_size
        out: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(12)
            k = len(out)
            if len(header) < 12:
                raise DataError(
                    f"{path}: truncated TFRecord: record {k} at byte {pos} has a {len(header)}-byte "
                    "header (12 expected)"
                )
            (length,) = struct.unpack("<Q", header[:8])
            (len_crc,) = struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != len_crc:
                raise DataError(f"{path}: corrupt TFRecord: length CRC mismatch in record {k} at byte {pos}")
            end = pos + 12 + length + 4
            if end > size:
                raise DataError(
                    f"{path}: truncated TFRecord: record {k} at byte {pos} declares {length} bytes "
                    f"but the file ends {end - size} bytes short"
                )
            out.append((pos + 12, length))
            pos = end
        return out
    finally:
        if own:
            f.close()


def read_record(
    f: BinaryIO, path: str | os.PathLike, index: int, offset: int, length: int, *, verify: bool = True
) -> bytes:
    """The data of one record located by :func:`index_records`, its CRC checked."""
    f.seek(offset)
    blob = f.read(length + 4)
    if len(blob) != length + 4:
        raise DataError(f"{path}: truncated TFRecord: record {index} at byte {offset - 12} is cut short")
    data = blob[:length]
    if verify:
        (crc,) = struct.unpack("<I", blob[length:])
        if masked_crc32c(data) != crc:
            raise DataError(
                f"{path}: corrupt TFRecord: data CRC mismatch in record {index} at byte {offset - 12}"
            )
    return data


def iter_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Every record's data, in order, CRCs checked."""
    with open(path, "rb") as f:
        for k, (offset, length) in enumerate(index_records(path, f)):
            yield read_record(f, path, k, offset, length)


def frame_record(data: bytes) -> bytes:
    """One record's bytes: header, data and data CRC."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> None:
    """Write records (already serialised, e.g. by :func:`encode_example`) to a TFRecord file."""
    with open(path, "wb") as f:
        for data in records:
            f.write(frame_record(data))


# ------------------------------------------------------------------------------------- protobuf


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_feature(value: Feature) -> bytes:
    if isinstance(value, bytes | bytearray):
        return _field(1, _field(1, bytes(value)))
    if isinstance(value, list) and all(isinstance(v, bytes | bytearray) for v in value):
        return _field(1, b"".join(_field(1, bytes(v)) for v in value))
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return _field(2, _field(1, arr.astype("<f4").ravel().tobytes()))
    if arr.dtype.kind in "iub":
        return _field(3, _field(1, b"".join(_varint(int(v)) for v in arr.ravel())))
    raise TypeError(f"cannot encode a feature of dtype {arr.dtype}")


def encode_example(features: dict[str, Feature]) -> bytes:
    """Serialise a ``tf.train.Example``: bytes → bytes_list, float arrays → float_list, ints → int64_list."""
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, _encode_feature(value)))
        for key, value in sorted(features.items())
    )
    return _field(1, entries)


class _Reader:
    """Minimal protobuf wire-format cursor over a memoryview."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: memoryview, start: int = 0, end: int | None = None) -> None:
        self.buf, self.pos, self.end = buf, start, len(buf) if end is None else end

    def varint(self) -> int:
        result = shift = 0
        buf = self.buf
        while True:
            if self.pos >= self.end or shift > 63:
                raise ValueError("bad varint")
            b = buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def fields(self) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, start, end) for length-delimited fields; value in start for varints."""
        while self.pos < self.end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == 2:
                n = self.varint()
                start = self.pos
                self.pos += n
                if self.pos > self.end:
                    raise ValueError("field runs past the end of its message")
                yield number, wire, start, self.pos
            elif wire == 0:
                yield number, wire, self.varint(), 0
            elif wire == 5:
                start = self.pos
                self.pos += 4
                yield number, wire, start, self.pos
            elif wire == 1:
                start = self.pos
                self.pos += 8
                yield number, wire, start, self.pos
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if self.pos > self.end:
                raise ValueError("field runs past the end of its message")


def _decode_feature(buf: memoryview, start: int, end: int) -> Feature:
    for number, _, s, e in _Reader(buf, start, end).fields():
        sub = _Reader(buf, s, e)
        if number == 1:  # BytesList
            return [bytes(buf[a:b]) for n, w, a, b in sub.fields() if n == 1 and w == 2]
        if number == 2:  # FloatList, packed (wire 2) or not (wire 5)
            parts = [bytes(buf[a:b]) for n, w, a, b in sub.fields() if n == 1 and w in (2, 5)]
            return np.frombuffer(b"".join(parts), dtype="<f4").astype(np.float32)
        if number == 3:  # Int64List, packed or not
            values: list[int] = []
            for n, w, a, b in sub.fields():
                if n != 1:
                    continue
                if w == 0:
                    values.append(a)
                else:
                    packed = _Reader(buf, a, b)
                    while packed.pos < packed.end:
                        values.append(packed.varint())
            return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in values], dtype=np.int64)
    return []  # an empty Feature


def decode_example(data: bytes, keys: Iterable[str] | None = None) -> dict[str, Feature]:
    """Parse a serialised ``tf.train.Example`` into ``{key: list[bytes] | float32 array | int64 array}``.

    ``keys`` limits parsing to those features (others are skipped without decoding).
    Raises ``ValueError`` on malformed protobuf.
    """
    wanted = None if keys is None else set(keys)
    buf = memoryview(data)
    out: dict[str, Feature] = {}
    for number, wire, s, e in _Reader(buf).fields():
        if number != 1 or wire != 2:
            continue
        for n2, w2, s2, e2 in _Reader(buf, s, e).fields():  # Features.feature map entries
            if n2 != 1 or w2 != 2:
                continue
            key, value = None, None
            for n3, w3, s3, e3 in _Reader(buf, s2, e2).fields():
                if n3 == 1 and w3 == 2:
                    key = bytes(buf[s3:e3]).decode()
                elif n3 == 2 and w3 == 2:
                    value = (s3, e3)
            if key is None or (wanted is not None and key not in wanted):
                continue
            out[key] = _decode_feature(buf, *value) if value is not None else []
    return out
