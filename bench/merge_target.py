"""Merge target bench: how long moving one study to the MPI patient takes in a real Orthanc.

Orthanc (Debian, tests/orthanc.py) runs on loopback. For each study size, a study of that many
CT-sized images (512 x 512, 16 bits: 512 KiB each) is stored, then moved by the merge target's
job (`engine.merge_targets.orthanc.move_study`: copy with the new identity, check, delete the
old copy). Beside it, in the same run and on the same Orthanc:

- baseline: storing the study in the first place (POST /instances, one per image);
- server-side: Orthanc's own `/studies/{id}/modify` of a study of the same size (another tag:
  Orthanc before 1.11.3 refuses a new PatientID at study level), i.e. roughly what the job costs
  on an Orthanc that does it in one call.

    python bench/merge_target.py [--sizes 20 100 300] [--rows 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from engine.merge_targets.job import ArchiveJob, Identity  # noqa: E402
from engine.merge_targets.orthanc import OrthancClient, move_study  # noqa: E402
from engine.merge_targets.settings import MergeTargetSettings  # noqa: E402
from tests.orthanc import Orthanc, running_orthanc, study_instance  # noqa: E402

NEW = Identity("100234", "GENHOSP", "SMITH^WILLIAM^J", "19580314", "M")


def store_study(orthanc: Orthanc, images: int, rows: int) -> tuple[str, float]:
    """A study of ``images`` images stored in Orthanc: its UID and the seconds it took."""
    uid, series = generate_uid(), generate_uid()
    elapsed = 0.0
    for number in range(images):
        dataset = study_instance(
            study_uid=uid,
            patient_id="X77",
            issuer="OTHERSITE",
            patient_name="SMITH^WILLIAM",
            birth_date="19580314",
            sex="M",
            study_date="20250102",
        )
        dataset.SeriesInstanceUID = series
        dataset.InstanceNumber = number + 1
        dataset.Rows = dataset.Columns = rows
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelData = bytes(rows * rows * 2)
        started = time.perf_counter()
        orthanc.upload(dataset)
        elapsed += time.perf_counter() - started
    return uid, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 300])
    parser.add_argument("--rows", type=int, default=512)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_orthanc(Path(folder)) as orthanc:
        settings = MergeTargetSettings(name="bench", kind="orthanc", url=orthanc.url)
        client = OrthancClient(settings)
        version = (client.call("GET", "/system") or {}).get("Version", "?")
        image_kib = options.rows * options.rows * 2 // 1024
        print(
            f"Orthanc {version} on loopback; images {options.rows}x{options.rows}, {image_kib} KiB"
        )
        print(
            f"{'images':>7} {'store s':>9} {'job s':>8} {'ms/image':>9} {'job/store':>10}"
            f" {'server-side s':>14} {'job/server-side':>16}"
        )
        for size in options.sizes:
            uid, stored = store_study(orthanc, size, options.rows)
            job = ArchiveJob(uid, Identity("X77", "OTHERSITE"), NEW, 1)
            started = time.perf_counter()
            moved = move_study(client, job)
            took = time.perf_counter() - started
            assert moved.outcome == "changed" and moved.instances == size, moved
            other, _ = store_study(orthanc, size, options.rows)
            (study,) = client.studies(other)
            body = {"Replace": {"StudyDescription": "bench"}, "Keep": ["StudyInstanceUID"]}
            started = time.perf_counter()
            client.call("POST", f"/studies/{study}/modify", {**body, "Force": True})
            server = time.perf_counter() - started
            print(
                f"{size:>7} {stored:>9.2f} {took:>8.2f} {1000 * took / size:>9.1f}"
                f" {took / stored:>10.2f} {server:>14.2f} {took / server:>16.2f}"
            )


if __name__ == "__main__":
    main()
