"""The skip gate (tests/skip_gate.py): a session with a skip fails (with xdist too) and lists the
reason, unless SSMKIT_ALLOW_SKIPS=1. Run on a throwaway suite in a fresh pytest process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skip_gate import ALLOW_SKIPS_ENV

HERE = Path(__file__).resolve().parent

SUITE = {
    "test_parts.py": "import pytest\n\n"
                     "def test_runs():\n    assert True\n\n"
                     "def test_needs_a_compiler():\n    pytest.skip('no compiler (gate test)')\n",
    "test_module_skip.py": "import pytest\n\n"
                           "pytest.importorskip('no_such_module_for_the_gate',\n"
                           "                    reason='interop missing (gate test)')\n\n"
                           "def test_never_runs():\n    assert True\n",
}


def _run(tmp_path: Path, *args: str, allow: bool) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text("from skip_gate import install_skip_gate\n\n"
                                          "def pytest_configure(config):\n    install_skip_gate(config)\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the throwaway suite is its own rootdir
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != ALLOW_SKIPS_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if allow:
        env[ALLOW_SKIPS_ENV] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_skip_fails_the_session_and_is_listed(tmp_path, xdist):
    out = _run(tmp_path, *xdist, allow=False)
    assert out.returncode == pytest.ExitCode.TESTS_FAILED, out.stdout + out.stderr
    assert "2 skipped: tested parts that did not run" in out.stdout, out.stdout
    assert "SKIP test_parts.py::test_needs_a_compiler: no compiler (gate test)" in out.stdout
    assert "SKIP test_module_skip.py: interop missing (gate test)" in out.stdout
    assert f"{ALLOW_SKIPS_ENV}=1" in out.stdout


def test_skips_pass_when_allowed(tmp_path):
    out = _run(tmp_path, allow=True)
    assert out.returncode == pytest.ExitCode.OK, out.stdout + out.stderr
    assert "skips are allowed on this machine" in out.stdout


def test_a_failure_keeps_its_own_exit_status(tmp_path):
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert False\n")
    out = _run(tmp_path, allow=True)
    assert out.returncode == pytest.ExitCode.TESTS_FAILED and "1 failed" in out.stdout, out.stdout
