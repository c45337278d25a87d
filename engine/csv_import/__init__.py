"""CSV files a person exported (an MPI, a PACS's list of studies): rows read with their line
numbers and one clear reason per bad row (``rows``), checked, batched and reported (``importer``).
"""

__all__ = [
    "importer",
    "rows",
]
