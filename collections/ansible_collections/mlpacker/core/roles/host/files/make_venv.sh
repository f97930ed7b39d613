#!/bin/sh
# Make a virtualenv from a shipped wheelhouse, offline:  make_venv.sh PYTHON VENV WHEELHOUSE REQUIREMENT...
# With uv when the wheelhouse holds its wheel (the pipeline role ships it): it installs numpy, scipy and
# scikit-learn in a few seconds where pip takes tens of seconds on a small host. With pip otherwise.
# Hermetic either way: no config file, index or cache of the host changes what gets installed.
# A wheelhouse holding requirements.lock (the spec's requirements_lock) is installed from it first with
# --require-hashes: every locked wheel must match its hash; then the requirements (the runtime) on top.
set -eu
python=$1 venv=$2 wheelhouse=$3
shift 3
lock="$wheelhouse/requirements.lock"
rm -rf "$venv"
uv_wheel=$(ls "$wheelhouse"/uv-*.whl 2>/dev/null | tail -n 1 || true)
if [ -n "$uv_wheel" ]; then
    uv="$wheelhouse/.uv/uv"
    if [ ! -x "$uv" ]; then
        # A wheel is a zip: take the binary out of it (installing uv with pip would cost what uv saves).
        "$python" - "$uv_wheel" "$uv" <<'PY'
import os
import sys
import zipfile

wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    member = next(name for name in archive.namelist() if name.endswith(".data/scripts/uv"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".tmp", "wb") as binary:
        binary.write(archive.read(member))
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
PY
    fi
    export UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 UV_NO_PROGRESS=1
    "$uv" venv --quiet --python "$python" "$venv"
    if [ -f "$lock" ]; then
        "$uv" pip install --quiet --offline --no-index --find-links "$wheelhouse" --link-mode copy \
            --python "$venv/bin/python" --require-hashes -r "$lock"
    fi
    "$uv" pip install --quiet --offline --no-index --find-links "$wheelhouse" --link-mode copy \
        --python "$venv/bin/python" "$@"
    # Bytecode, as pip writes it (uv does not): the services run as a user who cannot write into this root-owned
    # virtualenv, so without it every process they start (check, canary, each worker, after every restart)
    # compiles numpy, scipy and scikit-learn from source again, about 1.2 s of CPU each. Test suites are
    # left out (nothing imports them): about 2.5 s of CPU once, 40 MB.
    "$venv/bin/python" -m compileall -q -j 0 -x '/tests?/' "$venv/lib" >/dev/null ||
        echo "make_venv.sh: some modules of $venv could not be compiled; they compile at import" >&2
else
    export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_CONSTRAINT=""
    "$python" -m venv "$venv"
    if [ -f "$lock" ]; then
        "$venv/bin/python" -m pip install --no-index --find-links "$wheelhouse" --disable-pip-version-check \
            --no-warn-script-location -q --require-hashes -r "$lock"
    fi
    "$venv/bin/python" -m pip install --no-index --find-links "$wheelhouse" --disable-pip-version-check \
        --no-warn-script-location -q "$@"
fi
touch "$venv/.mlpacker-complete"
