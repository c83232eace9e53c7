"""Import time of ``selfsup.losses`` and ``selfsup`` in fresh interpreters, and which heavy libraries
each import loads, for this checkout and (optionally) another one side by side, interleaved.

    git worktree add /tmp/before <commit>
    python benchmarks/import_time.py --other /tmp/before --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HEAVY = ("lightning", "kornia", "matplotlib", "torchmetrics", "timm", "torch")
PROBE = """
import sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
import json
print(json.dumps({{"seconds": elapsed, "loaded": [m for m in {heavy!r} if m in sys.modules],
                   "file": sys.modules["selfsup"].__file__}}))
"""


def measure(checkout: Path, module: str) -> dict:
    code = PROBE.format(module=module, heavy=HEAVY)
    env = {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(checkout)), result["file"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", help="another checkout to compare with (e.g. a git worktree)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    checkouts = {"this": Path(__file__).resolve().parents[1]}
    if args.other:
        checkouts["other"] = Path(args.other).resolve()
    times: dict = {}
    loaded: dict = {}
    for _ in range(args.repeats):  # interleaved: background load hits every case alike
        for name, path in checkouts.items():
            for module in ("selfsup.losses", "selfsup"):
                result = measure(path, module)
                times.setdefault((name, module), []).append(result["seconds"])
                loaded[(name, module)] = result["loaded"]
    print(f"{'checkout':<8} {'module':<16} {'median s':>9} {'min s':>7}  heavy libraries loaded")
    for (name, module), values in times.items():
        print(
            f"{name:<8} {module:<16} {statistics.median(values):9.2f} {min(values):7.2f}  {', '.join(loaded[(name, module)])}"
        )


if __name__ == "__main__":
    main()
