"""azure-ai-ml's ``MLClient`` for a local Switchyard server.

The tutorial's SDK code runs with only the ``MLClient(...)`` line changed: the operations take
and return ``azure-ai-ml``'s own entity classes and translate them to Switchyard's admin API
(CONTRACT §5, and §11 for registered models and environments), which this package talks to
over plain HTTP.
"""

from ._assets import EnvironmentOperations, ModelOperations
from ._client import MLClient, SwitchyardPoller
from ._operations import OnlineDeploymentOperations, OnlineEndpointOperations

__all__ = [
    "MLClient",
    "OnlineEndpointOperations",
    "OnlineDeploymentOperations",
    "ModelOperations",
    "EnvironmentOperations",
    "SwitchyardPoller",
]
