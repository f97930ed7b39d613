# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Which of the placement plan's services a host runs, and how (virtualenv or container)."""

from __future__ import annotations


def host_services(plan, host, broker_host=""):
    """The plan's services on ``host``, split by how they run.

    ``containers_only``: nothing of the host's own Python serves (no virtualenv service, and the host is not
    the managed broker's), so its wheelhouse is built for the image's Python and it needs no service user,
    virtualenv or supervisord. ``positions``: 0..N-1 for N the most services any host runs; the roles' service
    includes loop over them on every host alike, because includes whose loop items differ between hosts run
    one host after the other.
    """
    services = [service for service in plan["services"] if service["host"] == host]
    venv = [service for service in services if not service.get("containers")]
    per_host = {}
    for service in plan["services"]:
        per_host[service["host"]] = per_host.get(service["host"], 0) + 1
    return {
        "all": services,
        "venv": venv,
        "container": [service for service in services if service.get("containers")],
        "containers_only": not venv and host != broker_host,
        "positions": list(range(max(per_host.values(), default=0))),
    }
