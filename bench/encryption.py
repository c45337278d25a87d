"""What encrypting the MPI and the study index costs: the same work on a clear store and on an
encrypted one (``store: encrypt_content``), in the same run, on the same files.

1. Synthetic data (bench/orphans.py): an MPI export of ``--patients`` patients and
   ``--orphans`` orphaned studies.
2. For each store mode, ``--rounds`` times, alternating (the machine may be shared: the
   fastest round of each mode is compared): a fresh SQLite store, then `crosswalk mpi import`,
   `crosswalk studies import`, `crosswalk reconcile run` (its first run: every blocking key
   made, every patient read on the DBAPI cursor), `crosswalk mpi search` by name and birth date.
3. Seconds per step and mode, and the encrypted/clear ratio of each.

    python bench/encryption.py [--patients 100000] [--orphans 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orphans import generate

from engine.store import crypto

ROOT = Path(__file__).resolve().parent.parent
MODES = ("clear", "encrypted")


def _steps(data: Path, config: Path) -> list[tuple[str, list[str]]]:
    return [
        ("mpi import", ["mpi", "import", str(data / "mpi.csv")]),
        ("studies import", ["studies", "import", str(data / "studies.csv")]),
        ("reconcile run", ["reconcile", "run", "--config", str(config)]),
        ("mpi search", ["mpi", "search", "--name", "SMITH", "--limit", "1000"]),
        ("mpi search by birth date", ["mpi", "search", "--birth-date", "1950-01-01"]),
    ]


def _configuration(work: Path, mode: str) -> Path:
    """The project's configuration, with encryption on for the encrypted mode."""
    folder = work / f"routes-{mode}"
    shutil.copytree(ROOT / "routes", folder)
    if mode == "encrypted":
        (folder / "store.yaml").write_text("store:\n  encrypt_content: true\n")
    return folder


def run_round(work: Path, data: Path, mode: str, number: int, keys: Path) -> dict[str, float]:
    """One round in a fresh store: seconds per step."""
    store = work / f"{mode}-{number}.db"
    env = dict(os.environ, CROSSWALK_DB=f"sqlite:///{store}", CROSSWALK_LOG_LEVEL="WARNING")
    env.pop(crypto.ENV_VAR, None)
    if mode == "encrypted":
        env[crypto.ENV_VAR] = str(keys)
    python = [sys.executable, "-m", "engine"]
    seconds: dict[str, float] = {}
    for name, command in _steps(data, work / f"routes-{mode}"):
        start = time.perf_counter()
        done = subprocess.run([*python, *command], env=env, cwd=ROOT, capture_output=True)
        seconds[name] = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{mode}: {name} failed:\n{done.stderr.decode()[-2000:]}")
    for path in work.glob(f"{store.name}*"):
        path.unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--orphans", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crosswalk-encryption-") as folder:
        work = Path(folder)
        data = work / "data"
        generate(data, args.patients, args.orphans)
        keys = work / "content.keys"
        keys.write_text(crypto.new_key_line() + "\n")
        for mode in MODES:
            _configuration(work, mode)
        best: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
        for number in range(args.rounds):
            for mode in MODES:
                for step, value in run_round(work, data, mode, number, keys).items():
                    best[mode][step] = min(value, best[mode].get(step, value))
                    print(f"round {number + 1} {mode:9} {step:26} {value:7.2f} s", flush=True)
    print(f"\n{args.patients:,} patients, {args.orphans:,} orphans; fastest of {args.rounds}")
    print(f"{'step':26} {'clear':>9} {'encrypted':>10} {'ratio':>7}")
    for step, clear in best["clear"].items():
        encrypted = best["encrypted"][step]
        print(f"{step:26} {clear:8.2f}s {encrypted:9.2f}s {encrypted / clear:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
