"""Data-format workloads of a training job, for benches/formats.rs.

  formats.py gen DIR    writes the datasets into DIR
  formats.py run DIR    runs each workload over DIR and prints {"name": seconds, ...}

Random access is seeded: every run reads the same places, here and on local disk.
"""

import json
import multiprocessing as mp
import os
import random
import sys
import time

import h5py
import lmdb
import numpy as np
from PIL import Image

LMDB_RECORDS, LMDB_VALUE = 20_000, 8192
NPY_ROWS, NPY_COLS = 65_536, 1024  # float32: 256 MiB
H5_ROWS, H5_COLS = 16_384, 4096  # float32: 256 MiB, chunks of 64 rows
JPEGS, JPEG_SIDE = 2000, 160


def gen(root):
    rng = np.random.default_rng(1)
    env = lmdb.open(os.path.join(root, "train.lmdb"), map_size=1 << 30, subdir=True)
    with env.begin(write=True) as txn:
        for i in range(LMDB_RECORDS):
            txn.put(b"%08d" % i, rng.bytes(LMDB_VALUE))
    env.close()
    np.save(os.path.join(root, "features.npy"),
            rng.random((NPY_ROWS, NPY_COLS), dtype=np.float32))
    with h5py.File(os.path.join(root, "volumes.h5"), "w") as f:
        f.create_dataset("x", data=rng.random((H5_ROWS, H5_COLS), dtype=np.float32),
                         chunks=(64, H5_COLS))
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for i in range(JPEGS):
        pixels = rng.integers(0, 255, (JPEG_SIDE, JPEG_SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", f"{i:05d}.jpg"), quality=90)


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def lmdb_gets(root):
    r = random.Random(7)
    env = lmdb.open(os.path.join(root, "train.lmdb"), readonly=True, lock=False,
                    readahead=False, subdir=True)
    with env.begin() as txn:
        for _ in range(5000):
            v = txn.get(b"%08d" % r.randrange(LMDB_RECORDS))
            assert v is not None and len(v) == LMDB_VALUE
    env.close()


def npy_gathers(root):
    r = np.random.default_rng(7)
    a = np.load(os.path.join(root, "features.npy"), mmap_mode="r")
    total = 0.0
    for _ in range(300):
        rows = np.sort(r.choice(NPY_ROWS, 64, replace=False))
        total += float(a[rows].sum())
    assert total > 0


def h5_slices(root):
    r = random.Random(7)
    with h5py.File(os.path.join(root, "volumes.h5"), "r") as f:
        x = f["x"]
        for _ in range(300):
            i = r.randrange(H5_ROWS - 16)
            assert x[i:i + 16, :].shape == (16, H5_COLS)


def decode(path):
    with Image.open(path) as im:
        im.load()
        return im.size[0]


def jpeg_epoch(root):
    d = os.path.join(root, "images")
    paths = [os.path.join(d, n) for n in sorted(os.listdir(d))]
    # A data loader's workers: forked processes, each opening and decoding files.
    with mp.get_context("fork").Pool(4) as pool:
        assert sum(pool.map(decode, paths, chunksize=16)) == JPEG_SIDE * len(paths)


WORKLOADS = {
    "lmdb_gets": lmdb_gets,
    "npy_gathers": npy_gathers,
    "h5_slices": h5_slices,
    "jpeg_epoch": jpeg_epoch,
}


def main():
    cmd, root = sys.argv[1], sys.argv[2]
    if cmd == "gen":
        gen(root)
    elif cmd == "run":
        names = sys.argv[3:] or list(WORKLOADS)
        print(json.dumps({n: timed(lambda: WORKLOADS[n](root)) for n in names}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
