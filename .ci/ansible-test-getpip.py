"""Offline stand-in for ansible-test's get-pip.py download.

ansible-test bootstraps pip in its requirement virtualenvs by downloading ``get-pip-<version>.py``; the
machine cannot reach that host, but it looks first in ``~/.ansible/test/cache/get_pip_<version>.py``.
CI copies this file there. It installs pip from the interpreter's bundled wheel (ensurepip) and then runs
pip with the same arguments, trusting the TLS-intercepting proxy's CA bundle (ansible-test's pip
environment drops PIP_CERT). The flags get-pip accepts but pip does not are removed.
"""

import ensurepip
import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GET_PIP_ONLY_FLAGS = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    ensurepip.bootstrap()
    pip_args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_FLAGS]
    if not pip_args:
        return 0
    command = [sys.executable, "-m", "pip", "install", "--cert", CA_BUNDLE, *pip_args]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
