"""What the folder source's file-list cache costs to check, against listing the folder again.

A temporary ImageFolder of ``--files`` empty ``.jpg`` files (the scan reads names only) in
``--classes`` class folders, each split into ``--parts`` nested folders
(``train/<class>/part<j>/<i>.jpg``), dated a minute back (a folder changed in the last seconds is
not cached). Side by side, interleaved over ``--rounds`` rounds, medians:

- ``full scan`` — ``selfsup.data.scan_folder``: what every process paid without a cache, and what a
  cache miss costs;
- ``check: every folder's time`` — the cache's validity check now: one ``stat`` per folder walked
  by the scan (split, class and nested folders);
- ``check: every file's stat`` — the alternative of checking each listed file (one ``stat`` per file);
- ``check: class folders only (before)`` — the previous check (split and class folders' times), which
  missed changes in nested folders; a copy is kept below for this comparison;
- ``cached load`` — ``selfsup.data.cached_scan`` with a valid cache: read the JSON, check, build
  the list (what ``setup`` costs on every process).

Run on a local disk with a warm page cache; on a network file system every ``stat`` and directory
read is a round trip, so the scan's cost grows with the file count and the check's with the folder
count.

    python benchmarks/file_list_cache.py --files 100000 --classes 100 --parts 10 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from selfsup.data.folder import _unchanged, cache_path, cached_scan, scan_folder


def build_folder(root: Path, files: int, classes: int, parts: int) -> Path:
    """``root/train/<class>/part<j>/<i>.jpg`` (empty files), every folder dated a minute back."""
    split = root / "train"
    per_folder = files // (classes * parts)
    for c in range(classes):
        for j in range(parts):
            folder = split / f"class{c:04d}" / f"part{j}"
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"{i:05d}.jpg").touch()
    past = time.time() - 60
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (past, past))
    return split


def class_folder_check(split: Path) -> list[tuple[str, int]]:
    """The previous cache key's inputs: the split folder's and each class folder's time."""
    stamps = [(".", split.stat().st_mtime_ns)]
    stamps += sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(split) if e.is_dir())
    return stamps


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        split = build_folder(Path(tmp) / "data", args.files, args.classes, args.parts)
        build_s = time.perf_counter() - start
        cache_dir = Path(tmp) / "cache"
        _, samples = cached_scan(split, None, cache_dir)  # writes the cache
        stored = json.loads(cache_path(split, cache_dir).read_text())
        folders = stored["folders"]
        paths = [path for path, _ in samples]
        print(
            f"{len(samples)} files in {len(folders)} folders (built in {build_s:.1f} s); "
            f"cache file {cache_path(split, cache_dir).stat().st_size / 1e6:.1f} MB"
        )
        candidates = {
            "full scan": lambda: scan_folder(split),
            "check: every folder's time": lambda: _unchanged(split, folders),
            "check: every file's stat": lambda: [os.stat(p).st_mtime_ns for p in paths],
            "check: class folders only (before)": lambda: class_folder_check(split),
            "cached load": lambda: cached_scan(split, None, cache_dir),
        }
        assert _unchanged(split, folders)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                times[name].append(timed(fn))
        scan = statistics.median(times["full scan"])
        print(f"\n| what | median ms ({args.rounds} rounds) | min ms | share of a full scan |")
        print("|---|---|---|---|")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median * 1e3:.2f} | {min(values) * 1e3:.2f} | {median / scan:.4f} |")


if __name__ == "__main__":
    main()
