"""The reconciler: which MPI patient each orphaned study is, with its evidence.

``settings`` (the ``reconciler:`` section), ``records`` (studies and patients read for
comparison), ``blocking`` (candidate pairs), ``comparisons`` (each comparison one ordered list
of levels), ``kernel`` (the pair-coding kernel: columns of pairs coded into levels),
``estimation`` (Fellegi-Sunter: u, m by EM, term frequencies), ``proposals`` (writing and
export), ``run`` (one run, start to end), ``names`` (names and numbers prepared for matching),
``tables``.
"""

__all__ = [
    "blocking",
    "comparisons",
    "estimation",
    "kernel",
    "names",
    "proposals",
    "records",
    "run",
    "settings",
    "tables",
]
