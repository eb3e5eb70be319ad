"""`make bench`: run every bench/bench_*.py in turn with its defaults.

Each script prints its figures and the command that made them; the engine
benchmark also writes bench/RESULTS-engine.md. Exits non-zero if any fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(BENCH.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH.parent)
        if code:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
