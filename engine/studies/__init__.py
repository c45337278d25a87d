"""The study index: what the PACS holds, as it recorded it (``tables``, upserted by ``index``),
from an export (``importer``) or the archive itself (``pull``: windows and pull state, over the
C-FIND client ``cfind`` and the QIDO-RS client ``qido``, with ``query``'s common ground and the
archive ``settings``); what is implausible (``flags``, ``placeholders``); orphans and
wrong-patient studies (``orphans``).
"""

__all__ = [
    "cfind",
    "flags",
    "importer",
    "index",
    "orphans",
    "placeholders",
    "pull",
    "qido",
    "query",
    "settings",
    "tables",
]
