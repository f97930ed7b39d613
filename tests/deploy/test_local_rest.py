"""REST pipelines deployed with the real playbooks on this machine (inventories/local, supervisord path).

One distributed deployment is shared by the tests of this module, in order: predictions, record, status,
idempotence, check mode, an artifact update, a release that fails its check, one that passes its check but
fails its canary's health check, undeploy. The atomic REST layout on this machine is deployed through the
Python API in ``tests/api/test_local.py`` (idempotence and leftovers are checked there).
"""

from __future__ import annotations

import grp
import hashlib
import importlib
import json
import pwd
import stat
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    LOCAL_INVENTORY,
    free_port_block,
    in_process_predictions,
    iris_spec,
    pipeline_leftovers,
    port_is_listening,
    post_predict,
    processes_mentioning,
    run_playbook,
    supervisor_pids,
    write_vars_file,
)

pytestmark = [pytest.mark.slow]


class Deployment:
    """A pipeline deployed on this machine, with what the tests need to drive it again."""

    def __init__(
        self, name: str, spec_file: Path, controller_vars: Path, base_port: int, models: dict[str, Path]
    ):
        self.name = name
        self.spec_file = spec_file
        self.controller_vars = controller_vars
        self.base_port = base_port
        self.models = models

    def play(self, playbook: str, spec_file: Path | None = None, check: bool = False):
        return run_playbook(
            playbook, LOCAL_INVENTORY, [spec_file or self.spec_file, self.controller_vars], check=check
        )


@pytest.fixture(scope="module")
def distributed(deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]):
    name = "t-rest-dist"
    base_port = free_port_block(3)
    spec_file = write_vars_file(
        deploy_root / f"{name}.yml", iris_spec(name, "rest", "distributed", iris_models, base_port)
    )
    controller_vars = write_vars_file(deploy_root / "controller.yml", controller_dirs)
    deployment = Deployment(name, spec_file, controller_vars, base_port, dict(iris_models))
    first = deployment.play("deploy.yml")
    try:
        assert first.rc == 0, first.describe()
        deployment.first_run = first
        yield deployment
    finally:
        # Undeploy whatever the tests left, also when one failed half-way.
        if pipeline_leftovers(name):
            deployment.play("undeploy.yml")


def test_entry_point_answers_like_the_in_process_pipeline(distributed: Deployment) -> None:
    url = f"http://127.0.0.1:{distributed.base_port}/predict"
    expected = in_process_predictions(
        [distributed.models["scaler"], distributed.models["pca"], distributed.models["classifier"]],
        IRIS_SAMPLES,
    )
    assert post_predict(url, IRIS_SAMPLES) == expected
    assert f"POST {url}" in distributed.first_run.output


def test_record_describes_every_stage(distributed: Deployment, controller_dirs: dict[str, str]) -> None:
    record = json.loads(
        (Path(controller_dirs["mlpacker_state_dir"]) / f"{distributed.name}.json").read_text()
    )
    assert record["entry_points"]["rest"] == [f"http://127.0.0.1:{distributed.base_port}/predict"]
    by_name = {stage["name"]: stage for stage in record["stages"]}
    for offset, (stage, model) in enumerate(
        (("scale", "scaler"), ("reduce", "pca"), ("classify", "classifier"))
    ):
        assert by_name[stage]["sha256"] == hashlib.sha256(distributed.models[model].read_bytes()).hexdigest()
        assert by_name[stage]["ports"] == [distributed.base_port + offset]
        assert by_name[stage]["hosts"] == ["localhost"]
        assert by_name[stage]["runtime_version"]


def test_status_reports_every_service_ready(distributed: Deployment) -> None:
    status = distributed.play("status.yml")
    assert status.rc == 0, status.describe()
    for stage in ("scale", "reduce", "classify"):
        assert f'"service": "{distributed.name}-{stage}"' in status.output
    assert '"ready": false' not in status.output


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits as {name: (soft, hard)}."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        limits[name] = (soft, hard)
    return limits


def test_services_run_as_the_pipelines_user_with_its_limits(distributed: Deployment) -> None:
    user = pwd.getpwnam(f"mlp-{distributed.name}")
    assert user.pw_shell == "/usr/sbin/nologin" and grp.getgrgid(user.pw_gid).gr_name == user.pw_name
    assert user.pw_name in Path("/opt/mlpacker/.state/created-user").read_text().split()
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    masters = supervisor_pids(programs)
    assert sorted(masters) == sorted(programs), masters
    for program, master in masters.items():
        # gunicorn's master and its workers: prlimit exec'd the runtime, the workers inherit its limits.
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        assert children, f"{program}: gunicorn has no workers"
        for pid in [master, *map(int, children)]:
            status = proc_status(pid)
            assert status["Uid"].split() == [str(user.pw_uid)] * 4, (program, status["Uid"])
            assert status["Gid"].split() == [str(user.pw_gid)] * 4, (program, status["Gid"])
            # supervisord gives the user its own group only (no supplementary groups)
            assert set(status["Groups"].split()) <= {str(user.pw_gid)}, (program, status["Groups"])
            assert status["Umask"] == "0027", (program, status["Umask"])
            assert status["CapEff"] == "0000000000000000", (program, status["CapEff"])
            limits = proc_limits(pid)
            # the service role's defaults: mlpacker_service_tasks_max 1024, mlpacker_service_memory_max 2G
            assert limits["Max processes"] == ("1024", "1024"), (program, limits["Max processes"])
            assert limits["Max data size"] == ("2147483648", "2147483648"), (program, limits["Max data size"])
    # The user owns its log folder and nothing of the release; the configuration is root's, group-readable.
    pipeline_dir = Path("/opt/mlpacker") / distributed.name
    release = (pipeline_dir / f"{distributed.name}-classify" / "current").resolve()
    expected = {
        pipeline_dir: (0, user.pw_gid, 0o750),
        release: (0, 0, 0o755),
        release / "config.json": (0, user.pw_gid, 0o640),
        Path("/var/log/mlpacker") / distributed.name: (user.pw_uid, user.pw_gid, 0o750),
        Path("/etc/mlpacker/supervisor/supervisord.conf"): (0, 0, 0o644),
    }
    for path, (uid, gid, mode) in expected.items():
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, mode), path
    artifacts = list((release / "artifacts").iterdir())
    assert artifacts and all(
        (a.stat().st_uid, a.stat().st_gid, stat.S_IMODE(a.stat().st_mode)) == (0, user.pw_gid, 0o640)
        for a in artifacts
    )


def test_second_run_changes_nothing(distributed: Deployment) -> None:
    second = distributed.play("deploy.yml")
    assert second.rc == 0, second.describe()
    assert second.changed() == {"localhost": 0}, second.describe()


def new_classifier(models: dict[str, Path], folder: Path) -> Path:
    """A classifier with other weights for the same PCA output (a model update of the last stage)."""
    features, labels = load_iris(return_X_y=True)
    reduced = joblib.load(models["pca"]).transform(joblib.load(models["scaler"]).transform(features))
    classifier = LogisticRegression(C=0.05, max_iter=500).fit(reduced, labels)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classifier-v2.joblib"
    joblib.dump(classifier, path)
    return path


def test_check_mode_then_artifact_update_restarts_only_that_stage(
    distributed: Deployment, deploy_root: Path
) -> None:
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    pids_before = supervisor_pids(programs)
    assert len(pids_before) == 3, pids_before
    updated_models = dict(
        distributed.models, classifier=new_classifier(distributed.models, deploy_root / "v2")
    )
    updated_spec = write_vars_file(
        deploy_root / f"{distributed.name}-v2.yml",
        iris_spec(distributed.name, "rest", "distributed", updated_models, distributed.base_port),
    )

    checked = distributed.play("deploy.yml", updated_spec, check=True)
    assert checked.rc == 0, checked.describe()
    assert checked.changed()["localhost"] > 0, "check mode should report the update it would make"
    assert supervisor_pids(programs) == pids_before, "check mode restarted a service"
    url = f"http://127.0.0.1:{distributed.base_port}/predict"
    old_pipeline = [distributed.models["scaler"], distributed.models["pca"], distributed.models["classifier"]]
    new_pipeline = [updated_models["scaler"], updated_models["pca"], updated_models["classifier"]]
    probe = np.asarray(load_iris().data[::5]).tolist()
    assert in_process_predictions(old_pipeline, probe) != in_process_predictions(new_pipeline, probe)
    assert post_predict(url, probe) == in_process_predictions(old_pipeline, probe)

    updated = distributed.play("deploy.yml", updated_spec)
    assert updated.rc == 0, updated.describe()
    pids_after = supervisor_pids(programs)
    assert pids_after[programs[0]] == pids_before[programs[0]], "scale restarted without a change"
    assert pids_after[programs[1]] == pids_before[programs[1]], "reduce restarted without a change"
    assert pids_after[programs[2]] != pids_before[programs[2]], "classify kept its old process"
    assert post_predict(url, probe) == in_process_predictions(new_pipeline, probe)
    distributed.spec_file = updated_spec
    distributed.models = updated_models


def wrapped_classifier(
    deploy_root: Path, monkeypatch: pytest.MonkeyPatch, module_name: str, source: str, classifier: Path
) -> tuple[Path, Path]:
    """Write ``source`` as ``module_name`` in a code folder the controller imports from (its ansible runs
    too, through PYTHONPATH); pickle its ``WrappedClassifier`` around ``classifier``. -> (folder, artifact)"""
    code_dir = deploy_root / f"{module_name}-code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / f"{module_name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.setenv("PYTHONPATH", str(code_dir))
    module = importlib.import_module(module_name)
    artifact = deploy_root / f"classifier-{module_name}.joblib"
    joblib.dump(module.WrappedClassifier(joblib.load(classifier)), artifact)
    return code_dir, artifact


CUSTOM_MODULE = """
class WrappedClassifier:
    \"\"\"Exists on the controller only (a classic: custom code not shipped to the hosts).\"\"\"

    def __init__(self, inner):
        self.inner = inner
        self.n_features_in_ = inner.n_features_in_

    def predict(self, data):
        return self.inner.predict(data)
"""


def test_release_that_fails_its_check_keeps_the_old_one_serving(
    distributed: Deployment, deploy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The controller (PYTHONPATH) can load and describe the artifact; the release on the host cannot load it.
    _, broken_artifact = wrapped_classifier(
        deploy_root, monkeypatch, "mlpacker_test_unshipped", CUSTOM_MODULE, distributed.models["classifier"]
    )
    broken_models = dict(distributed.models, classifier=broken_artifact)
    broken_spec = write_vars_file(
        deploy_root / f"{distributed.name}-broken.yml",
        iris_spec(distributed.name, "rest", "distributed", broken_models, distributed.base_port),
    )
    programs = [f"mlpacker-{distributed.name}-{stage}" for stage in ("scale", "reduce", "classify")]
    pids_before = supervisor_pids(programs)
    current = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-classify/current")
    release_before = current.resolve()

    failed = distributed.play("deploy.yml", broken_spec)
    assert failed.rc != 0, failed.describe()
    assert f"service '{distributed.name}-classify'" in failed.output, failed.describe()
    assert "mlpacker_test_unshipped" in failed.output, failed.describe()
    assert "previous release keeps serving" in failed.output, failed.describe()
    assert current.resolve() == release_before
    assert supervisor_pids(programs) == pids_before
    url = f"http://127.0.0.1:{distributed.base_port}/predict"
    expected = in_process_predictions(
        [distributed.models["scaler"], distributed.models["pca"], distributed.models["classifier"]],
        IRIS_SAMPLES,
    )
    assert post_predict(url, IRIS_SAMPLES) == expected


ROOT_ONLY_MODULE = """
import os


class WrappedClassifier:
    \"\"\"Loads as root (the deploy's check) but not as the service user (the canary): a release that passes
    its check and still fails its health check.\"\"\"

    def __init__(self, inner):
        self.inner = inner
        self.n_features_in_ = inner.n_features_in_

    def __setstate__(self, state):
        if os.geteuid() != 0:
            raise PermissionError("mlpacker_test_root_only refuses to load as uid %d" % os.geteuid())
        self.__dict__.update(state)

    def predict(self, data):
        return self.inner.predict(data)
"""


def test_release_that_fails_its_canary_health_check_keeps_the_old_one_serving(
    distributed: Deployment, deploy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_dir, artifact = wrapped_classifier(
        deploy_root,
        monkeypatch,
        "mlpacker_test_root_only",
        ROOT_ONLY_MODULE,
        distributed.models["classifier"],
    )
    spec = iris_spec(
        distributed.name,
        "rest",
        "distributed",
        dict(distributed.models, classifier=artifact),
        distributed.base_port,
    )
    spec["mlpacker_pipeline"]["code_dir"] = str(code_dir)  # shipped: the check on the host can load it
    spec_file = write_vars_file(deploy_root / f"{distributed.name}-root-only.yml", spec)
    program = f"mlpacker-{distributed.name}-classify"
    pid_before = supervisor_pids([program])[program]
    current = Path(f"/opt/mlpacker/{distributed.name}/{distributed.name}-classify/current")
    release_before = current.resolve()

    failed = run_playbook(
        "deploy.yml",
        LOCAL_INVENTORY,
        [spec_file, distributed.controller_vars],
        extra_vars={"mlpacker_health_retries": 5},  # the canary never gets ready: do not wait a minute for it
    )
    assert failed.rc != 0, failed.describe()
    assert "failed its health check on canary port" in failed.output, failed.describe()
    assert "previous release keeps serving" in failed.output, failed.describe()
    assert "mlpacker_test_root_only refuses to load" in failed.output, (
        failed.describe()
    )  # the canary's log tail
    assert current.resolve() == release_before
    assert supervisor_pids([program])[program] == pid_before
    assert not any("canary" in path.name for path in Path("/etc/mlpacker/supervisor/conf.d").iterdir())
    expected = in_process_predictions(
        [distributed.models["scaler"], distributed.models["pca"], distributed.models["classifier"]],
        IRIS_SAMPLES,
    )
    assert post_predict(f"http://127.0.0.1:{distributed.base_port}/predict", IRIS_SAMPLES) == expected


def test_undeploy_leaves_no_process_port_or_file(
    distributed: Deployment, controller_dirs: dict[str, str]
) -> None:
    removed = distributed.play("undeploy.yml")
    assert removed.rc == 0, removed.describe()
    assert pipeline_leftovers(distributed.name) == []
    assert processes_mentioning(f"/opt/mlpacker/{distributed.name}/") == []
    for offset in range(3):
        assert not port_is_listening("127.0.0.1", distributed.base_port + offset)
    assert not (Path(controller_dirs["mlpacker_state_dir"]) / f"{distributed.name}.json").exists()
    # The pipeline's user (MLPacker created it) and its group went with it.
    with pytest.raises(KeyError):
        pwd.getpwnam(f"mlp-{distributed.name}")
    with pytest.raises(KeyError):
        grp.getgrnam(f"mlp-{distributed.name}")
    created = Path("/opt/mlpacker/.state/created-user")
    assert not created.exists() or f"mlp-{distributed.name}" not in created.read_text().split()
    again = distributed.play("undeploy.yml")
    assert again.rc == 0 and again.changed() == {"localhost": 0}, again.describe()
