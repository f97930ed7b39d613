"""The baseline: a bare Flask app doing the same predict with the same model (served by gunicorn gthread)."""

from __future__ import annotations

import os

import joblib
import numpy as np
from flask import Flask, jsonify, request

model = joblib.load(os.environ["BARE_MODEL"])
app = Flask(__name__)


@app.post("/predict")
def predict():  # noqa: ANN201
    instances = request.get_json(force=True)["instances"]
    return jsonify({"predictions": model.predict(np.asarray(instances)).tolist()})


@app.get("/health/ready")
def ready():  # noqa: ANN201
    return {"status": "ready"}
