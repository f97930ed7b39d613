# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a pipeline left on a host, read from the host itself (no controller record needed).

Undeploy acts on this: the pipeline's services and their supervisord programs or systemd units, whether it
uses the managed broker, and what else still needs MLPacker's shared parts (other pipelines, other users of
the managed broker), so the shared parts go with the last user and never before.
"""

from __future__ import annotations

import os
import pwd

UNIT_SUFFIXES = {"supervisor": (".conf", "-canary.conf"), "systemd": (".service", "-canary.service")}


def visible_directories(path):
    """Names of the directories in ``path`` that do not start with a dot (hidden ones are MLPacker's own:
    wheelhouses, virtualenvs, the broker, state)."""
    try:
        entries = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [name for name in entries if not name.startswith(".") and os.path.isdir(os.path.join(path, name))]


def existing_files(directory, names):
    return [os.path.join(directory, name) for name in names if os.path.isfile(os.path.join(directory, name))]


def process_alive(pid_file):
    """The pid in ``pid_file`` when that process runs, else None."""
    try:
        with open(pid_file, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def read_created_users(path):
    """The users MLPacker created on this host, one a line in ``path`` (in the order they were made)."""
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle]
    except OSError:
        return []
    return list(dict.fromkeys(name for name in names if name))


def folder_user(path):
    """The name of the user who owns ``path`` (not root), else None: the user a pipeline's services run as
    owns its log folder, and the managed broker's user its data folder."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def users_footprint(pipeline, other_pipelines, other_broker_users, root, log_root, last):
    """The pipeline's user, the users MLPacker created, and which of them undeploy removes: the pipeline's
    user when MLPacker created it and no other pipeline (nor the managed broker, while another pipeline uses
    it) runs as it; with the last pipeline, every user MLPacker created."""
    user = folder_user(os.path.join(log_root, pipeline))
    created = read_created_users(os.path.join(root, ".state", "created-user"))
    still_needed = {folder_user(os.path.join(log_root, other)) for other in other_pipelines}
    if other_broker_users:
        still_needed.add(folder_user(os.path.join(root, ".broker")))
    created_user = user if user in created and user not in still_needed else None
    if last:
        others = [name for name in created if name != created_user]
        to_remove = ([created_user] if created_user else []) + others
    else:
        to_remove = [created_user] if created_user else []
    return {
        "user": user,
        "created_user": created_user,
        "created_users": created,
        "users_to_remove": to_remove,
    }


def pipeline_footprint(pipeline, root, config_root, log_root, supervisor_conf_dir, systemd_dir, run_dir):
    """What undeploy needs to know about ``pipeline`` on this host, as a dict (the module's RETURN)."""
    pipeline_dir = os.path.join(root, pipeline)
    services = visible_directories(pipeline_dir)
    programs = ["mlpacker-" + service for service in services]
    units = {
        manager: existing_files(
            supervisor_conf_dir + "/conf.d" if manager == "supervisor" else systemd_dir,
            [program + suffix for program in programs for suffix in suffixes],
        )
        for manager, suffixes in UNIT_SUFFIXES.items()
    }
    broker_users_dir = os.path.join(config_root, "mosquitto", "pipelines")
    try:
        # <pipeline> markers; <pipeline>.passwd and <pipeline>.acl are their credential fragments
        broker_users = sorted(name for name in os.listdir(broker_users_dir) if "." not in name)
    except (FileNotFoundError, NotADirectoryError):
        broker_users = []
    other_broker_users = [name for name in broker_users if name != pipeline]
    other_pipelines = [name for name in visible_directories(root) if name != pipeline]
    last = not other_pipelines and not other_broker_users
    return {
        "exists": os.path.isdir(pipeline_dir),
        "services": services,
        "supervisor_programs": units["supervisor"],
        "systemd_units": units["systemd"],
        "uses_broker": pipeline in broker_users,
        "other_broker_users": other_broker_users,
        "broker_files": [
            path
            for path in (os.path.join(config_root, "mosquitto"), os.path.join(root, ".broker"))
            + (os.path.join(log_root, "broker.log"),)
            if os.path.lexists(path)
        ],
        "broker_units": {
            "supervisor": existing_files(supervisor_conf_dir + "/conf.d", ["mlpacker-broker.conf"]),
            "systemd": existing_files(systemd_dir, ["mlpacker-broker.service"]),
        },
        "other_pipelines": other_pipelines,
        # Nothing else needs supervisord, the managed broker or the users MLPacker created once it is gone.
        "last": last,
        "supervisord_pid": process_alive(os.path.join(run_dir, "supervisord.pid")),
        **users_footprint(pipeline, other_pipelines, other_broker_users, root, log_root, last),
    }
