"""Splink (DuckDB backend) on the reconciler benchmark's data: the baseline to beat.

Links the orphaned studies (studies.csv) to the MPI (mpi.csv) as a careful Splink user would:
trauma placeholders (DOE, UNKNOWN, TRAUMA…, 1900-01-01) taken as unknown; the library's name,
date-of-birth and exact comparisons; blocking rules like the reconciler's; u by random sampling,
m by EM on two blocking rules (birth date; family name, on a sample of 10^6 of its 10^7 pairs at
1M x 10k: all of them take 160 s and 4 GiB for the same F1). Prints the top candidate per study
above the threshold as CSV (study_uid, mrn, match_probability) on stdout, timings on stderr.

    python bench/splink_baseline.py /tmp/orphans [--threshold 0.5]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink import __version__ as SPLINK_VERSION

__all__ = ["SPLINK_VERSION", "run_splink"]

_MPI = """
CREATE TABLE mpi AS
SELECT mrn AS unique_id, family_name, given_name, birth_date, sex, postal_code
FROM read_csv(?, header = true, all_varchar = true)
"""
_STUDIES = """
CREATE TABLE studies AS
SELECT study_uid AS unique_id,
    CASE WHEN placeholder THEN NULL ELSE family_name END AS family_name,
    CASE WHEN placeholder THEN NULL ELSE given_name END AS given_name,
    nullif(birth_date, '1900-01-01') AS birth_date,
    CASE WHEN sex IN ('M', 'F') THEN sex END AS sex,
    postal_code
FROM (
    SELECT *, family_name IN ('DOE', 'UNKNOWN') OR family_name LIKE 'TRAUMA%' AS placeholder
    FROM read_csv(?, header = true, all_varchar = true)
)
"""
_TOP = """
SELECT study_uid, mrn, match_probability FROM (
    SELECT
        CASE WHEN source_dataset_l = 'studies' THEN unique_id_l ELSE unique_id_r END AS study_uid,
        CASE WHEN source_dataset_l = 'studies' THEN unique_id_r ELSE unique_id_l END AS mrn,
        match_probability
    FROM {table}
)
QUALIFY row_number() OVER (PARTITION BY study_uid ORDER BY match_probability DESC, mrn) = 1
"""


def settings() -> SettingsCreator:
    return SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("family_name").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("birth_date", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.ExactMatch("postal_code"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("family_name", "substr(birth_date, 1, 4)"),
            block_on("birth_date"),
            block_on("substr(given_name, 1, 3)", "substr(birth_date, 6, 5)"),
        ],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def run_splink(data_dir: Path, threshold: float = 0.5) -> dict[str, tuple[str, float]]:
    """study_uid -> (MRN, match probability) of its best candidate above ``threshold``."""
    db_api = DuckDBAPI()
    connection = db_api.duckdb_con
    connection.execute("SET enable_progress_bar = false")
    connection.execute(_MPI, [str(data_dir / "mpi.csv")])
    connection.execute(_STUDIES, [str(data_dir / "studies.csv")])
    tables = [
        db_api.register("mpi", dataset_display_name="mpi"),
        db_api.register("studies", dataset_display_name="studies"),
    ]
    linker = Linker(tables, settings(), log_level=logging.WARNING)
    deterministic = block_on("family_name", "given_name", "birth_date")
    linker.training.estimate_probability_two_random_records_match([deterministic], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("birth_date"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("family_name"), max_pairs=1e6
    )
    predictions = linker.inference.predict(threshold_match_probability=threshold)
    rows = connection.sql(_TOP.format(table=predictions.physical_name)).fetchall()
    return {study: (mrn, probability) for study, mrn, probability in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="folder written by bench/orphans.py")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    found = run_splink(args.data, args.threshold)
    print(
        f"splink {SPLINK_VERSION}: {len(found)} studies linked in"
        f" {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )
    writer = csv.writer(sys.stdout)
    writer.writerow(("study_uid", "mrn", "match_probability"))
    writer.writerows((study, mrn, f"{p:.6f}") for study, (mrn, p) in sorted(found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
