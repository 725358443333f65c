from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from localmem import __version__, build_info
from localmem.cli import main


def test_doctor_reports_kernel_store_and_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "mystore"))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"kernel     {build_info()['kernel']}" in result.output
    assert str(tmp_path / "mystore") in result.output
    assert "all checks passed" in result.output
    assert "FAIL" not in result.output
    assert "(not created yet)" in result.output and not (tmp_path / "mystore").exists()
    assert "torn-tail repair ok" in result.output
    # The flash engine's plan under the default budget, its reply the dense one's.
    assert "flash plan" in result.output and "MB pinned" in result.output
    assert "identical to dense" in result.output


def test_doctor_checks_the_memory_budget_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "mystore"))
    monkeypatch.setenv("LOCALMEM_DOCTOR_BUDGET", "")  # undone after: the command sets it
    result = CliRunner().invoke(main, ["doctor", "--memory-budget", "20%"])
    assert result.exit_code == 1
    assert "FAIL flash plan" in result.output and "give at least" in result.output


def test_doctor_summarizes_an_existing_store(tmp_path, monkeypatch):
    from localmem import Store

    with Store.open(tmp_path / "mystore") as s:
        s.put_many([(i, f"note {i}") for i in range(12)])
    monkeypatch.setenv("LOCALMEM_STORE", str(tmp_path / "mystore"))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "12 items, LSN 12" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_installed_entry_point_runs_doctor():
    # The console script pip installed beside this interpreter (the venv need not be active).
    beside = Path(sys.executable).parent / "localmem"
    exe = str(beside) if beside.exists() else shutil.which("localmem")
    assert exe, "the localmem console script is not installed"
    out = subprocess.run([exe, "doctor"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command" in result.output
