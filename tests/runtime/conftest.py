"""Fixtures of the runtime suite (defined in runtime_helpers.py)."""

from runtime_helpers import code_dir, iris_models, mosquitto, mqtt_probe, pki, runtimes  # noqa: F401
