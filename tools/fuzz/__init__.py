"""Coverage-guided fuzzing of the engine's input paths (atheris): see tools/fuzz/README.md.

``invariants`` holds the checks each harness (and tests/test_hostile_input.py) asserts.
"""
