"""Repository-wide pytest configuration, loaded for every path pytest is given in this repository.

It registers ``tests/outcomes.py`` here, at the root, so its rules reach the collection's unit tests too
(a plugin named in ``tests/conftest.py`` is not loaded when pytest is given only the collection's tests):
under CI a missing component fails the tests that need it, and ``--results-json`` writes what a run did
for ``scripts/test``'s total.
"""

pytest_plugins = ["tests.outcomes"]
