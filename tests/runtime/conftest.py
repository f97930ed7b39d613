"""Fixtures of the runtime suite (defined in runtime_helpers.py)."""

from runtime_helpers import code_dir, iris_models, mosquitto, mqtt_probe, runtimes  # noqa: F401
