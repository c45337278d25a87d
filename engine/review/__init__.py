"""Deciding proposals: the worklist (``worklist``), approve/reject/defer each in one audited
transaction (``decisions``; an approval routes its merge message through the router it is
given), the merge message (``merge_message``), the engine's own upkeep of proposals
(``upkeep``), the ``review:`` section (``settings``), the audit trail (``tables``) and the
was-is list in migration tools' layouts (``was_is``).
"""

__all__ = [
    "decisions",
    "merge_message",
    "settings",
    "tables",
    "upkeep",
    "was_is",
    "worklist",
]
