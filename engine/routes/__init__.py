"""Routes analysts write: filters (``conditions``), transform steps (``steps``), mapping tables
(``mappings``), sandboxed templates (``templates``), the route settings (``model``) and their
YAML syntax (``syntax``), and the ``router`` that runs them on a message.
"""

__all__ = [
    "conditions",
    "mappings",
    "model",
    "router",
    "steps",
    "syntax",
    "templates",
]
