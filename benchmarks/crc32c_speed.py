"""CRC-32C per BAIR record: the NumPy fallback vs the C package (``pip install worldmodel[crc32c]``).

    python benchmarks/crc32c_speed.py [--records 16] [--rounds 7]

Builds BAIR-sized records in memory (30 steps × two 64×64×3 images + action + end-effector
position, ≈ 740 KB, as softmotion30_44k) and a TFRecord file of them, then times, per record and
per backend in alternating rounds (median of the rounds): the masked CRC of the data alone, and a
whole read (``iter_records``: both CRCs checked) plus ``decode_example``, and windows/s of
``open_dataset`` over the file (opened anew each round, T 12, one process, every window once).
Needs ``google-crc32c`` (or ``crc32c``) installed; prints the NumPy figures alone otherwise. The
last line is the figure: the whole-read speed-up per record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bair_records import bair_record

from worldmodel.data import crc32c as crc
from worldmodel.data import open_dataset
from worldmodel.data.tfrecord import decode_example, iter_records, write_tfrecord


def per_record(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=16, help="records per round (default 16)")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds per backend (default 7)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    records = [bair_record(rng) for _ in range(args.records)]
    size = np.mean([len(r) for r in records])
    native = crc._backend if crc.BACKEND != "numpy" else None
    backends = {"numpy": crc.crc32c_numpy, **({crc.BACKEND: native} if native else {})}
    print(
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} records={args.records} x {size / 1e3:.0f} KB "
        f"rounds={args.rounds} backends={', '.join(backends)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "softmotion30_44k" / "train"
        folder.mkdir(parents=True)
        path = folder / f"traj_0_to_{len(records) - 1}.tfrecords"
        write_tfrecord(path, records)

        def windows() -> None:
            ds = open_dataset(tmp, split="train", seq_len=12)
            for i in range(len(ds)):
                ds[i]

        def read_all() -> None:
            for data in iter_records(path):
                decode_example(data)

        times: dict[str, dict[str, list[float]]] = {b: {"crc": [], "read": [], "win": []} for b in backends}
        for _ in range(args.rounds):
            for name, fn in backends.items():
                crc._backend = fn  # what masked_crc32c (hence the reader) calls
                times[name]["crc"].append(
                    per_record(lambda: [crc.masked_crc32c(r) for r in records], len(records))
                )
                times[name]["read"].append(per_record(read_all, len(records)))
                times[name]["win"].append(per_record(windows, len(records)))
        crc._backend = native or crc.crc32c_numpy
    med = {b: {k: statistics.median(v) * 1e3 for k, v in t.items()} for b, t in times.items()}
    for name, m in med.items():
        print(
            f"{name}: CRC {m['crc']:.3f} ms/record ({size / m['crc'] / 1e3:.0f} MB/s), "
            f"read + decode {m['read']:.3f} ms/record, open_dataset {1e3 / m['win']:.0f} windows/s"
        )
    if native is None:
        print(f"numpy only: read + decode {med['numpy']['read']:.3f} ms/record (no C CRC-32C installed)")
        return 0
    n, c = med["numpy"], med[crc.BACKEND]
    print(f"{crc.BACKEND} vs numpy: CRC {n['crc'] / c['crc']:.1f}× faster per record")
    print(
        f"whole read per BAIR record: numpy {n['read']:.2f} ms vs {crc.BACKEND} {c['read']:.2f} ms = "
        f"{n['read'] / c['read']:.2f}×"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
