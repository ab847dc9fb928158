"""scripts/reproduce.py end to end at smoke scale: every section filled, figures written, stages cached."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(out, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "scripts.reproduce", "--scale=smoke", f"--out={out}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_reproduce_smoke_writes_full_report_and_caches(tmp_path):
    out = tmp_path / "rep"
    r = _run(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final test accuracy" in r.stdout and "REPORT.md" in r.stdout
    report = (out / "REPORT.md").read_text()
    for heading in ("## 1. Training", "## 2. Accuracy cost", "## 3. Systolic-array cost model", "## 4. Scheduling"):
        assert heading in report
    assert re.search(r"\| scalesim_v3_calc.json \| 39 \| 39 \| 100.0 % \|", report)
    assert "| fc_digits | 1f1b | 1,0 |" in report
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        data = (out / img).read_bytes()
        assert data[:4] == b"\x89PNG", img
    assert "missing" not in report
    r2 = _run(out)
    assert r2.returncode == 0
    assert r2.stdout.count(": cached") == 4
    r3 = _run(out, "--stages=bogus")
    assert r3.returncode == 1 and "unknown stage" in r3.stderr
