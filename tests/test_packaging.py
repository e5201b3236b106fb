"""The package works however it is reached: from a source checkout (passes/ beside the
randfx/ folder, bound as randfx.passes) and from an installed copy."""

import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_passes_import_from_the_checkout_root_and_elsewhere():
    code = ("import randfx, randfx.passes.capture, randfx.passes.sparse_backward\n"
            "assert randfx.passes.capture.__name__ == 'randfx.passes.capture'\n"
            "print(randfx.passes.__file__)")
    for cwd in (REPO, tempfile.gettempdir()):
        out = _run(code, cwd)
        assert out.returncode == 0, (cwd, out.stderr)
        assert out.stdout.strip().endswith(os.path.join("passes", "__init__.py"))


def test_cli_runs_from_the_checkout_root():
    out = subprocess.run([sys.executable, "-m", "randfx", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout and "inspect" in out.stdout
