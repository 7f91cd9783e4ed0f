"""Offline stand-in for get-pip.py, for ansible-test's sanity virtualenvs.

ansible-test bootstraps pip in each sanity venv with a get-pip.py it downloads
from ci-files.testing.ansible.com, which this workplace cannot reach. PyPI is
reachable, so: put pip in with the standard library's ensurepip, then let that pip
install the exact packages ansible-test asked for (e.g. ``pip==24.2``).
`make sanity` copies this file to ~/.ansible/test/cache/get_pip_<version>.py.
"""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# A TLS-intercepting registry proxy needs the system CA bundle, which the pip of
# ensurepip does not pick up by itself here.
bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(bundle):
    args = ["--cert", bundle, *args]
env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", *args], env=env))
