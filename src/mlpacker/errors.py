"""Exceptions raised by the MLPacker controller API before anything runs.

Failures *during* a run (a failed task, an unreachable host) are not exceptions: they come back in the
:class:`mlpacker.results.RunResult` of the call, so callers can inspect per-host stats and the failing task.
"""

from __future__ import annotations


class MLPackerError(Exception):
    """Base class of every error the controller API raises."""


class SpecError(MLPackerError, ValueError):
    """The pipeline spec cannot be used: the file does not load, or its top level is not as expected.

    ``source`` names the file (or ``<dict>``) and ``field`` the offending key when one is known, so that
    the message a user sees points at what to fix.
    """

    def __init__(self, message: str, *, source: str = "<dict>", field: str | None = None) -> None:
        self.source = source
        self.field = field
        super().__init__(f"{source}: {message}")


class InventoryError(MLPackerError, ValueError):
    """The inventory argument is neither an existing path nor a mapping."""


class ProjectError(MLPackerError):
    """The Ansible project (the folder holding ``playbooks/``) cannot be found."""
