"""Stream mode: an MQTT consumer (paho-mqtt 2.x) running the stage chain on every message."""
