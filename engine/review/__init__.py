"""Deciding proposals: the worklist (``worklist``), approve/reject/defer each in one audited
transaction (``decisions``; an approval routes its merge message through the router it is
given), the merge message (``merge_message``), the engine's own upkeep of proposals
(``upkeep``), the ``review:`` section (``settings``) and the audit trail (``tables``).
"""

__all__ = [
    "decisions",
    "merge_message",
    "settings",
    "tables",
    "upkeep",
    "worklist",
]
