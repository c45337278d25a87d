"""The durable store: opening and migrating it (``database``), its tables (``schema``), the one
writer every commit goes through (``writer``) and its operations (``operations``), a received
message's row (``received``), the delivery queues and operators' controls (``queue``), finding
messages (``messages``), memory bounds (``limits``) and the compiled hot-path statements
(``fastsql``).
"""

__all__ = [
    "database",
    "fastsql",
    "limits",
    "messages",
    "operations",
    "queue",
    "received",
    "schema",
    "writer",
]
