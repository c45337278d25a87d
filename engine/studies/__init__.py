"""The study index: what the PACS holds, as it recorded it (``tables``, upserted by ``index``),
from an export (``importer``) or the archive itself (``pull``, with its ``settings``); what is
implausible (``flags``, ``placeholders``); orphans and wrong-patient studies (``orphans``).
"""

__all__ = [
    "flags",
    "importer",
    "index",
    "orphans",
    "placeholders",
    "pull",
    "settings",
    "tables",
]
