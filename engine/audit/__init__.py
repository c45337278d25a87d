"""The audit trail: who did what to which object, from where, when, with what outcome.

Every state-changing operator action and every display of PHI is recorded as one row of
``audit_events`` (``tables``), chained to the row before by its hash (``trail``: recording,
reading, who and where); ``verify`` walks the chain and names the rows changed, removed or
inserted; ``syslog`` sends each event as it is recorded to a syslog collector (RFC 5424 over TCP,
or TLS per RFC 5425), as IHE ATNA audit repositories receive them; ``settings`` is the
``audit:`` section; ``actions`` names every action recorded.
"""

__all__ = [
    "actions",
    "settings",
    "syslog",
    "tables",
    "trail",
    "verify",
]
