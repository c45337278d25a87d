"""MLLP, the framing HL7 v2 travels in over TCP: the frame decoder (``framing``), the asyncio
listener that hands each complete frame to a handler (``listener``) and the client that sends a
message and reads its ACK (``client``).
"""

__all__ = [
    "client",
    "framing",
    "listener",
]
