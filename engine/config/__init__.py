"""The configuration, assembled: the YAML files of a folder read into one typed
:class:`~engine.config.model.EngineConfig` (``loader``), with the reference pages and the JSON
Schema generated from the settings' own specs (``reference``, ``schema``).

Each part owns its settings (listeners and destinations in :mod:`engine.pipeline.settings`,
archives in :mod:`engine.studies.settings`, routes in :mod:`engine.routes.model`, the reconciler's
and the review's sections beside them); this package only puts them together.
"""

__all__ = [
    "loader",
    "model",
    "reference",
    "schema",
]
