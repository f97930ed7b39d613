"""The baseline: a bare Flask app doing the same predict with the same model (served by gunicorn gthread).

BARE_METHOD (default predict) and BARE_NEXT_HOP (a URL; the result is POSTed there over a kept-alive,
TCP_NODELAY connection per thread and its answer passed through) let several of these form a bare chain,
the floor a runtime chain's per-hop cost is compared with.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from urllib.parse import urlsplit

import joblib
import numpy as np
from flask import Flask, Response, jsonify, request

model = joblib.load(os.environ["BARE_MODEL"])
method = getattr(model, os.environ.get("BARE_METHOD", "predict"))
next_hop = urlsplit(os.environ["BARE_NEXT_HOP"]) if os.environ.get("BARE_NEXT_HOP") else None
local = threading.local()
app = Flask(__name__)


def forward(result: list) -> Response:
    assert next_hop is not None
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(next_hop.hostname, next_hop.port, timeout=10)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"instances": result}).encode()
    conn.request("POST", next_hop.path, body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    return Response(answer.read(), status=answer.status, mimetype="application/json")


@app.post("/predict")
def predict():  # noqa: ANN201
    instances = request.get_json(force=True)["instances"]
    result = method(np.asarray(instances)).tolist()
    if next_hop is not None:
        return forward(result)
    return jsonify({"predictions": result})


@app.get("/health/ready")
def ready():  # noqa: ANN201
    return {"status": "ready"}
