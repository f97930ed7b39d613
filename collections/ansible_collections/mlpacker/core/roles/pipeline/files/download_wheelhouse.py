# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Download a host target's wheels and archive them:  download_wheelhouse.py --archive X.tar [options] REQ...

Run by the pipeline role on the controller with the controller's Python. pip runs isolated from any pip
configuration (``--isolated``, ``PIP_CONFIG_FILE=/dev/null``): only the ``--pip-option`` arguments (the
target's platform, the index settings) say what and where from.

- Without ``--lock``: one ``pip download`` of the runtime wheel, the tools and the requirements, with their
  dependencies.
- With ``--lock`` (the spec's requirements_lock): ``pip download --require-hashes -r LOCK``; then the runtime
  wheel and the requirements are resolved from those wheels alone (``--no-index``), so a package the lock
  misses fails here, named by pip; then the tools (MLPacker's own: supervisor, uv). The lock is shipped in the
  wheelhouse as ``requirements.lock``, and the hosts install it with ``--require-hashes --no-index``.

The folder is archived whole (a temporary name renamed into place), with a ``MANIFEST`` of its files; exit 1
with pip's own message when pip fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile


class PipFailed(Exception):
    pass


def pip_download(python, folder, options, arguments, what):
    argv = [python, "-m", "pip", "download", "--isolated", "--disable-pip-version-check", "-q"]
    argv += ["--only-binary=:all:", *options, "-d", folder, *arguments]
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}").splitlines()
        raise PipFailed(f"pip download of {what} failed:\n" + "\n".join(output[-40:]))


def build(args):
    archive = os.path.abspath(args.archive)
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    folder = tempfile.mkdtemp(prefix=os.path.basename(archive) + ".", dir=os.path.dirname(archive))
    partial = folder + ".tar"
    try:
        options = list(args.pip_option)
        if args.lock:
            pip_download(
                args.python,
                folder,
                options,
                ["--require-hashes", "-r", args.lock],
                f"the requirements_lock {args.lock} (--require-hashes)",
            )
            pip_download(
                args.python,
                folder,
                [*options, "--no-index", "--find-links", folder],
                [args.runtime_wheel, *args.requirements],
                f"the runtime and the requirements from the locked wheels only (requirements_lock {args.lock}"
                " must hold every package they need)",
            )
            if args.tool:
                pip_download(
                    args.python, folder, options, list(args.tool), "the tools " + " ".join(args.tool)
                )
            shutil.copyfile(args.lock, os.path.join(folder, "requirements.lock"))
        else:
            pip_download(
                args.python,
                folder,
                options,
                [args.runtime_wheel, *args.tool, *args.requirements],
                "the wheelhouse",
            )
        # mkdtemp makes it 0700: the archive's top entry must say 0755, or unpacking changes hosts' folders.
        os.chmod(folder, 0o755)
        names = sorted(os.listdir(folder))
        with open(os.path.join(folder, "MANIFEST"), "w", encoding="utf-8") as manifest:
            manifest.write("".join(name + "\n" for name in names))
        with tarfile.open(partial, "w") as tar:
            tar.add(folder, arcname=".")
        os.replace(partial, archive)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if os.path.exists(partial):
            os.unlink(partial)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="the .tar to write")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip downloads")
    parser.add_argument("--runtime-wheel", required=True)
    parser.add_argument("--tool", action="append", default=[], help="a tool to ship besides (repeat)")
    parser.add_argument("--lock", help="a pip requirements file with --hash options")
    parser.add_argument(
        "--pip-option", action="append", default=[], help="--pip-option=--platform=... (repeat)"
    )
    parser.add_argument("requirements", nargs="*")
    args = parser.parse_args(argv)
    try:
        build(args)
    except PipFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot write the wheelhouse {args.archive}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
