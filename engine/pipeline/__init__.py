"""The running engine: a message from the listener to the PACS.

``server`` starts and stops the parts in order; ``intake`` checks, stores and acknowledges each
received frame; ``dispatcher`` has it routed (in the ``routing_process``) and its deliveries
queued; ``delivery`` sends each destination's queue in order; ``mpi_destination`` applies the
``mpi`` queue to the MPI; ``reload`` swaps in a changed configuration; ``settings`` are the
listeners' and destinations' settings.
"""

__all__ = [
    "delivery",
    "dispatcher",
    "intake",
    "mpi_destination",
    "reload",
    "routing_process",
    "server",
    "settings",
]
