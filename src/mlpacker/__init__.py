"""MLPacker controller API: deploy fitted ML pipelines with Ansible, from Python or the ``mlpacker`` CLI.

See :mod:`mlpacker.api` for the calls (:func:`deploy`, :func:`status`, :func:`probe`, :func:`undeploy`),
:mod:`mlpacker.results` for what they return and :mod:`mlpacker.runner` for how runs are laid out.
"""

from mlpacker.api import deploy, probe, status, undeploy
from mlpacker.errors import InventoryError, MLPackerError, ProjectError, SpecError
from mlpacker.events import ProgressEvent
from mlpacker.results import Failure, HostStats, RunResult
from mlpacker.spec import PipelineSpec, load_spec

__version__ = "0.1.0"

__all__ = [
    "Failure",
    "HostStats",
    "InventoryError",
    "MLPackerError",
    "PipelineSpec",
    "ProgressEvent",
    "ProjectError",
    "RunResult",
    "SpecError",
    "deploy",
    "load_spec",
    "probe",
    "status",
    "undeploy",
]
