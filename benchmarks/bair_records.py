"""BAIR-sized TFRecord records of random content, for the data benchmarks (crc32c_speed, data_loading).

A record as in softmotion30_44k: 30 steps × two 64×64×3 images (raw bytes) + a 4-d action + a 3-d
end-effector position, ≈ 740 KB.
"""

from __future__ import annotations

import numpy as np

from worldmodel.data.tfrecord import encode_example


def bair_record(rng: np.random.Generator) -> bytes:
    """One serialised ``tf.train.Example`` of random frames, actions and positions drawn from ``rng``."""
    feats = {}
    for t in range(30):
        feats[f"{t}/image_aux1/encoded"] = rng.integers(0, 256, 64 * 64 * 3, dtype=np.uint8).tobytes()
        feats[f"{t}/image_main/encoded"] = rng.integers(0, 256, 64 * 64 * 3, dtype=np.uint8).tobytes()
        feats[f"{t}/action"] = rng.uniform(-1, 1, 4).astype(np.float32)
        feats[f"{t}/endeffector_pos"] = rng.normal(size=3).astype(np.float32)
    return encode_example(feats)
