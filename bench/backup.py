"""Backup and restore timings on a large SQLite store: what RTO to expect from its size.

Builds a store of --messages delivered messages (bench/retention.py's, ~2.5 KB each with their
deliveries), then times `crosswalk backup`, `backup verify` and `restore` (clear and encrypted),
each as the command an operator runs.

    python bench/backup.py [--messages 500000]
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

from retention import build, size

from engine.store.crypto import new_key_line


def timed(*args: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"crosswalk {' '.join(args)} failed: {done.stderr}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crosswalk-backup-"))
    try:
        store = work / "store.db"
        build(store, args.messages)
        print(f"store: {args.messages:,} messages, {size(store) / 2**20:,.0f} MiB")
        keys = work / "content.keys"
        keys.write_text(new_key_line() + "\n")
        clear_env = {k: v for k, v in os.environ.items() if k != "CROSSWALK_KEYS"}
        sealed_env = dict(clear_env, CROSSWALK_KEYS=str(keys))
        for name, env in (("clear", clear_env), ("encrypted", sealed_env)):
            backup, restored = work / f"{name}.backup", work / f"{name}-restored.db"
            took = timed("backup", str(backup), "--db", str(store), env=env)
            checked = timed("backup", "verify", str(backup), env=env)
            back = timed("restore", str(backup), "--db", str(restored), env=env)
            print(
                f"{name:9} backup {took:6.1f} s  verify {checked:6.1f} s  restore {back:6.1f} s"
                f"  ({backup.stat().st_size / 2**20:,.0f} MiB)"
            )
            backup.unlink()
            restored.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
