"""The test runner's own settings (pyproject.toml's [tool.pytest.ini_options])."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_skipped_test_is_listed_with_its_reason(tmp_path):
    test = tmp_path / "test_skipped.py"
    test.write_text(
        "import pytest\n\n\n"
        '@pytest.mark.skip(reason="needs a CUDA GPU")\n'
        "def test_on_a_gpu():\n"
        "    pass\n"
    )
    config = ["-c", str(REPO / "pyproject.toml"), "-n0"]  # -n0: no worker processes to start
    argv = [sys.executable, "-m", "pytest", *config, str(test)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "SKIPPED [1] test_skipped.py:4: needs a CUDA GPU" in result.stdout
