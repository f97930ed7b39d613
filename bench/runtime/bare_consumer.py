"""The baseline: a bare paho loop doing the same work (parse, predict, publish) with the same model.

BARE_METHOD (default predict) and BARE_OUTPUT_KIND (default predictions) let several of these form a bare
chain (scale -> reduce -> classify), the floor a runtime chain's per-hop cost is compared with.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

import joblib
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

model = joblib.load(os.environ["BARE_MODEL"])
method = getattr(model, os.environ.get("BARE_METHOD", "predict"))
output_kind = os.environ.get("BARE_OUTPUT_KIND", "predictions")
port, in_topic, out_topic, ready_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{os.getpid()}", protocol=mqtt.MQTTv5)


def on_connect(client, userdata, flags, reason_code, properties):  # noqa: ANN001, ANN201
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # same as the runtime
    client.subscribe(in_topic, qos=1)


def on_subscribe(*args):  # noqa: ANN002, ANN201
    open(ready_file, "w").close()


def on_message(client, userdata, message):  # noqa: ANN001, ANN201
    payload = json.loads(message.payload)
    result = method(np.asarray(payload["instances"])).tolist()
    client.publish(out_topic, json.dumps({"id": payload["id"], output_kind: result}), qos=1)


client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
signal.signal(signal.SIGINT, lambda *a: client.disconnect())
client.connect("127.0.0.1", port)
client.loop_forever()
