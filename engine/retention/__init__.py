"""Retention: how long the store keeps message content and metadata, and the pruning that
applies it, inside the engine (a bounded rate of small batches) or from ``crosswalk prune``."""
