"""Merge targets: archives an approved merge is applied to directly, for a PACS without an HL7
(ADT) feed. ``settings`` (a target under ``review: merge_targets:``), ``job`` (what one approval
asks of a target, as queued), ``orthanc`` (applying a job through Orthanc's REST API).
"""

__all__ = ["job", "orthanc", "settings"]
