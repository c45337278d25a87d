"""The master patient index: its tables, PID and export rows read into one form
(``demographics``), every value bounded to its column (``bounds``), the ADT rules that keep it
from the feed (``feed``, through :mod:`engine.pipeline.mpi_destination`), the statements
(``records``), ``mpi import`` (``importer``) and ``mpi show|search`` (``queries``).
"""

__all__ = [
    "bounds",
    "demographics",
    "feed",
    "importer",
    "queries",
    "records",
    "tables",
]
