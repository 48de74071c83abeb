#!/usr/bin/env python3
"""Probe: fdatasync latency of small WAL-like appends on this file system.

Writes N records of SIZE bytes, each followed by fdatasync, into
  append     a file that grows with every write,
  fallocate  a file preallocated with posix_fallocate (ext4: "unwritten" extents),
  zeros      a file pre-filled with written zeros and fsynced,
round-robin (one record to each file in turn, so that noise from other work
on the machine hits all three alike), and prints the latency of each
write+fdatasync in microseconds. It informs how the WAL preallocates segments
(titanstore-core/src/storage/wal). Run it by hand, on an idle machine, in a
directory on the disk that holds the data.

usage: probe-fdatasync.py [DIR] [N] [SIZE]
"""

import os
import sys
import tempfile
import time

MODES = ("append", "fallocate", "zeros")


def prepare(path, mode, total):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if mode == "fallocate":
            os.posix_fallocate(fd, 0, total)
        elif mode == "zeros":
            chunk = b"\0" * (1 << 20)
            left = total
            while left > 0:
                left -= os.write(fd, chunk[: min(left, len(chunk))])
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def pct(sorted_lat, q):
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))]


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "."
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    total = max(n * size, 1 << 20)
    rec = b"x" * size
    with tempfile.TemporaryDirectory(dir=base) as d:
        fds = {}
        for mode in MODES:
            path = os.path.join(d, mode)
            prepare(path, mode, total)
            fds[mode] = os.open(path, os.O_WRONLY)
        lat = {mode: [] for mode in MODES}
        try:
            for i in range(n):
                for mode in MODES:
                    t = time.perf_counter_ns()
                    os.pwrite(fds[mode], rec, i * size)
                    os.fdatasync(fds[mode])
                    lat[mode].append((time.perf_counter_ns() - t) / 1000)
        finally:
            for fd in fds.values():
                os.close(fd)
    for mode in MODES:
        s = sorted(lat[mode])
        print(
            f"{mode:10} p25 {pct(s, 0.25):6.0f}  median {pct(s, 0.5):6.0f}"
            f"  p90 {pct(s, 0.9):6.0f}  p99 {pct(s, 0.99):6.0f} us"
        )


if __name__ == "__main__":
    main()
