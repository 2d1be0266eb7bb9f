"""The evaluate stage's tests score the run folder the show stage's tests train (once per session)."""

from tests.show.conftest import trained_run  # noqa: F401 (a fixture, found by pytest by name)
