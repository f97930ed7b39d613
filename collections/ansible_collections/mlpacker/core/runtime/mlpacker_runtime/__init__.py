"""MLPacker stage runtime: runs an ordered chain of fitted pipeline stages as a REST or MQTT service."""

__version__ = "0.1.0"
