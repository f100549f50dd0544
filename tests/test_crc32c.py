"""CRC-32C backends: the NumPy fallback on its own and forced for a TFRecord read, the choice of
backend when no C package is installed, and a C package (``worldmodel[crc32c]``) against NumPy."""

from __future__ import annotations

import os
import sys

import pytest
from test_data_bair import crc32c_bitwise

from worldmodel.data import crc32c as crc
from worldmodel.data.tfrecord import encode_example, iter_records, write_tfrecord
from worldmodel.errors import DataError


def test_numpy_path_equals_the_definition():
    assert crc.crc32c_numpy(b"123456789") == 0xE3069283 and crc.crc32c_numpy(b"") == 0
    for n in (1, 255, 256, 257, 4096, 12289, 100_003):
        data = os.urandom(n)
        want = crc32c_bitwise(data)
        assert crc.crc32c_numpy(data) == want, n
        assert crc.crc32c_numpy(bytearray(data)) == crc.crc32c_numpy(memoryview(data)) == want, n


def test_no_c_package_picks_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "crc32c", None)
    name, fn = crc._pick_backend()
    assert name == "numpy" and fn is crc.crc32c_numpy


def test_forced_numpy_path_reads_and_checks_tfrecords(tmp_path, monkeypatch):
    monkeypatch.setattr(crc, "_backend", crc.crc32c_numpy)
    records = [encode_example({"x": os.urandom(3000 + i)}) for i in range(3)]
    path = tmp_path / "a.tfrecords"
    write_tfrecord(path, records)
    assert list(iter_records(path)) == records
    blob = bytearray(path.read_bytes())
    blob[12 + 100] ^= 1  # one bit of the first record's data
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="data CRC mismatch in record 0"):
        list(iter_records(path))


def test_c_package_agrees_with_numpy():
    if crc.BACKEND == "numpy":
        # an optional extra: without it there is no second implementation to compare, and the
        # NumPy path is checked above against known values and the bitwise definition (test_data_bair)
        pytest.skip("the optional C CRC-32C is not installed (pip install 'worldmodel[crc32c]')")
    for n in (0, 1, 9, 255, 256, 4096, 100_003, 740_000):
        data = os.urandom(n)
        assert crc.crc32c(data) == crc.crc32c_numpy(data), n
        assert crc.crc32c(memoryview(data)) == crc.crc32c_numpy(data), n
