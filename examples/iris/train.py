"""Train the iris example: a scaler, a PCA and a classifier, each saved as its own pipeline stage.

Run from anywhere: ``python examples/iris/train.py``. Writes
``examples/iris/models/{scaler,pca,classifier}.joblib``
(git-ignored), plus ``models/sample.json`` (a few instances to send to a deployed pipeline).
The stages are fitted in sequence, so scaler -> PCA -> classifier reproduces the full pipeline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "models"


def train(output_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Fit the three stages on iris and save them; return stage name -> artifact path."""
    features, labels = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    pca = PCA(n_components=2, random_state=seed).fit(scaled)
    reduced = pca.transform(scaled)
    classifier = LogisticRegression(max_iter=500, random_state=seed).fit(reduced, labels)

    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "scaler": output_dir / "scaler.joblib",
        "pca": output_dir / "pca.joblib",
        "classifier": output_dir / "classifier.joblib",
    }
    joblib.dump(scaler, paths["scaler"])
    joblib.dump(pca, paths["pca"])
    joblib.dump(classifier, paths["classifier"])
    # One sample of each class, for a first request against the deployed pipeline.
    sample = [features[index].tolist() for index in (0, 50, 100)]
    (output_dir / "sample.json").write_text(json.dumps({"instances": sample}) + "\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", type=Path, default=DEFAULT_OUTPUT, help="where to write the artifacts"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of PCA and the classifier")
    args = parser.parse_args()
    for stage, path in train(args.output_dir, args.seed).items():
        print(f"{stage}: {path}")


if __name__ == "__main__":
    main()
