"""Run every fuzz target in turn, one process at a time, and print what each found.

    nice -n 19 .venv/bin/python -m tools.fuzz.run --minutes 9 [--targets framing,answers]

Seeds are every message in samples/ and ../shared/corpus (framed for the ``framing`` target);
work files go to build/fuzz/TARGET/ (corpus, findings, log). A target that crashes is started
again, from its grown corpus, until its time is up; each crash input is kept under findings/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from engine.mllp.framing import encode_frame

ROOT = Path(__file__).resolve().parents[2]
SEED_FOLDERS = [ROOT / "samples", ROOT.parent / "shared" / "corpus"]
TARGETS = ["framing", "answers", "message", "ack"]
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)")


def write_seeds(target: str, folder: Path) -> int:
    """One seed file per sample message; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for source in SEED_FOLDERS:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or path.suffix not in (".hl7", ".txt"):
                continue
            data = path.read_bytes()
            if target == "framing":
                data = encode_frame(data) + encode_frame(data[: len(data) // 2])
            (folder / f"{count:03d}").write_bytes(data)
            count += 1
    return count


def fuzz(target: str, seconds: float, work: Path) -> dict[str, object]:
    """Fuzz one target for ``seconds``; the figures libFuzzer reported at its last status."""
    corpus, seeds, findings = work / "corpus", work / "seeds", work / "findings"
    for folder in (corpus, findings):
        folder.mkdir(parents=True, exist_ok=True)
    seed_count = write_seeds(target, seeds)
    executions, coverage, features, runs, crashes = 0, 0, 0, 0, 0
    deadline = time.monotonic() + seconds
    with (work / "log").open("w") as log:
        while (left := int(deadline - time.monotonic())) > 5 and runs < 50:
            runs += 1
            command = [
                sys.executable, "-m", "tools.fuzz.harness", target, str(corpus), str(seeds),
                f"-max_total_time={left}", "-timeout=10", "-rss_limit_mb=1536",
                "-max_len=65536", f"-artifact_prefix={findings}/", "-print_final_stats=1",
            ]  # fmt: skip
            result = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, errors="replace", check=False
            )
            log.write(result.stdout + result.stderr)
            last = _STATUS.findall(result.stderr)
            if last:
                run_execs, cov, ft = (int(x) for x in last[-1])
                executions += run_execs
                coverage, features = max(coverage, cov), max(features, ft)
            if result.returncode != 0:
                crashes += 1
    return {
        "target": target,
        "seconds": round(seconds),
        "seeds": seed_count,
        "executions": executions,
        "coverage (edges)": coverage,
        "features": features,
        "corpus": len(list(corpus.iterdir())),
        "crashes": crashes,
        "findings": sorted(p.name for p in findings.iterdir()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=9.0, help="per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz")
    args = parser.parse_args()
    for target in args.targets.split(","):
        report = fuzz(target, args.minutes * 60, args.work / target)
        print(" ".join(f"{key}={value}" for key, value in report.items()), flush=True)


if __name__ == "__main__":
    main()
