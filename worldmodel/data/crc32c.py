"""CRC-32C (Castagnoli), the checksum of the TFRecord framing, in NumPy.

A byte-at-a-time Python loop manages about 1 MB/s, far too slow for BAIR records (~740 KB each).
Here the message is cut into ``n`` equal chunks whose CRCs advance together, one vectorised table
step per byte column, and the chunk CRCs are then merged pairwise: CRC is linear over GF(2), so
``crc(A || B) = shift(crc(A), len(B)) ^ crc(B)`` where ``shift`` (appending zero bytes) is a fixed
32×32 bit matrix, applied through four 256-entry byte tables. Leading zero bytes leave a zero-init
CRC unchanged, which lets the message be padded at the front to a multiple of the chunk count, and
the standard initial value ``0xFFFFFFFF`` is the same as inverting the first four bytes.
If the optional ``google_crc32c`` (``pip install worldmodel[crc32c]``) or ``crc32c`` packages are
installed, they are used instead (``BACKEND`` names the one in use; ``benchmarks/crc32c_speed.py``
measures the difference); the NumPy path stays the fallback and is tested on its own.
"""

from __future__ import annotations

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_SHIFT_CACHE: dict[int, np.ndarray] = {}


def _crc_py(data: bytes, crc: int = 0) -> int:
    """Raw (no init/xorout) CRC of a short message, plain Python."""
    table = _TABLE_LIST
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _columns_to_tables(columns: np.ndarray) -> np.ndarray:
    """A linear map given by its 32 column images → (4, 256) byte tables."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    for b in range(4):
        for i in range(8):
            lo = 1 << i
            tables[b, lo : 2 * lo] = tables[b, :lo] ^ columns[8 * b + i]
    return tables


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24]


def _shift_tables(nbytes: int) -> np.ndarray:
    """Byte tables of the map 'append ``nbytes`` zero bytes' on a raw CRC register."""
    cached = _SHIFT_CACHE.get(nbytes)
    if cached is not None:
        return cached
    reg = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    one_byte = np.empty(32, dtype=np.uint32)
    r = reg.copy()
    r = _TABLE[r & 0xFF] ^ (r >> 8)
    one_byte[:] = r
    # Square-and-multiply over the bit matrix of a one-byte shift.
    result = _columns_to_tables(reg)  # identity
    power = _columns_to_tables(one_byte)
    n = nbytes
    while n:
        if n & 1:
            result = _columns_to_tables(_apply(power, _apply(result, reg)))
        n >>= 1
        if n:
            power = _columns_to_tables(_apply(power, _apply(power, reg)))
    _SHIFT_CACHE[nbytes] = result
    return result


_CHUNK = 128  # bytes per chunk: 32 four-byte steps, each over all chunks at once
_WORD_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """Tables of 'feed four zero bytes' applied to the low and high 16 bits of the register."""
    global _WORD_TABLES
    if _WORD_TABLES is None:
        halves = []
        for shift in (0, 16):
            r = np.arange(1 << 16, dtype=np.uint32) << np.uint32(shift)
            for _ in range(4):
                r = _TABLE[r & 0xFF] ^ (r >> 8)
            halves.append(r.astype(np.uint32))
        _WORD_TABLES = (halves[0], halves[1])
    return _WORD_TABLES


def _crc_raw_numpy(buf: np.ndarray) -> int:
    """Raw zero-init CRC of a uint8 array, chunk-parallel, four bytes per step."""
    lo_table, hi_table = _word_tables()
    n = len(buf)
    chunks = -(-n // _CHUNK)
    padded = np.zeros(chunks * _CHUNK, dtype=np.uint8)
    padded[chunks * _CHUNK - n :] = buf  # zero bytes in front change nothing
    words = padded.view("<u4").reshape(chunks, _CHUNK // 4).T.copy()  # (steps, chunks)
    crc = np.zeros(chunks, dtype=np.uint32)
    for row in words:
        crc ^= row
        crc = lo_table[crc & 0xFFFF] ^ hi_table[crc >> 16]
    # Zero-CRC chunks in front (leading zeros) make the count a power of two for the pairwise merge.
    size = 1 << (chunks - 1).bit_length()
    crc = np.concatenate([np.zeros(size - chunks, dtype=np.uint32), crc])
    level = 0
    while len(crc) > 1:
        crc = _apply(_merge_tables(level), crc[0::2]) ^ crc[1::2]
        level += 1
    return int(crc[0])


_MERGE: list[np.ndarray] = []


def _merge_tables(level: int) -> np.ndarray:
    """Shift tables for ``_CHUNK * 2**level`` zero bytes; each level squares the one before."""
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    while len(_MERGE) <= level:
        if not _MERGE:
            _MERGE.append(_shift_tables(_CHUNK))
        else:
            prev = _MERGE[-1]
            _MERGE.append(_columns_to_tables(_apply(prev, _apply(prev, basis))))
    return _MERGE[level]


def _crc32c_numpy(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C in NumPy whatever backend is installed (the fallback, and the reference in tests)."""
    view = memoryview(data).cast("B")
    if len(view) < 256:
        return _crc_py(view, 0xFFFFFFFF) ^ 0xFFFFFFFF
    buf = np.frombuffer(view, dtype=np.uint8).copy()
    buf[:4] ^= 0xFF  # initial value 0xFFFFFFFF == inverting the first four bytes
    return _crc_raw_numpy(buf) ^ 0xFFFFFFFF


def _pick_backend():
    """``(name, function)`` of the fastest CRC-32C available: a C package, else NumPy."""
    try:
        import google_crc32c  # type: ignore[import-not-found]

        if getattr(google_crc32c, "implementation", "c") != "c":
            # its pure-Python fallback is a byte loop, far slower than the NumPy path here
            raise ImportError("google_crc32c without its C extension")
        # value() takes read-only bytes only; bytes(b) of a bytes object is the same object, no copy
        return "google-crc32c", lambda data: google_crc32c.value(bytes(data))
    except ImportError:
        pass
    try:
        import crc32c as _crc32c_mod  # type: ignore[import-not-found]

        return "crc32c", lambda data: _crc32c_mod.crc32c(data)
    except ImportError:
        pass
    return "numpy", _crc32c_numpy


crc32c_numpy = _crc32c_numpy
BACKEND, _backend = _pick_backend()
"""The CRC-32C implementation in use: ``"google-crc32c"``, ``"crc32c"`` or ``"numpy"``."""


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data`` as an unsigned 32-bit int (``crc32c(b"123456789") == 0xE3069283``)."""
    return _backend(data)


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant, modulo 2**32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
