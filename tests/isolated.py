"""Run test code in a fresh interpreter, for cases that could crash the test process."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def run_isolated(code, timeout=600):
    """Run ``code`` in a fresh interpreter (a kernel reading out of bounds may crash it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"subprocess died with return code {proc.returncode}\n"
                                  f"stdout: {proc.stdout}\nstderr: {proc.stderr[-3000:]}")
    return proc.stdout
