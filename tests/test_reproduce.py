"""scripts/reproduce.py end to end at smoke scale: every section filled, figures written, stages cached;
the real-data delay study where Fashion-MNIST is installed, and its skip reasons."""
import os
import re
import subprocess
import sys

import pytest

from spikepipe_jax.data.idx import DEFAULT_DIRS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_DIR, FASHION_PACKAGE = DEFAULT_DIRS["fashion_mnist"]
HAVE_FASHION = os.path.isdir(FASHION_DIR)


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
    assert "## 2b. Pipeline gradient delays on real data" in report
    if not HAVE_FASHION:  # a skipped stage is not cached: installing the data runs it next time
        assert f"skipped: Fashion-MNIST not installed in {FASHION_DIR} (apt-get install {FASHION_PACKAGE})" in report
    r2 = _run(out)
    assert r2.returncode == 0
    assert r2.stdout.count(": cached") == (5 if HAVE_FASHION else 4)
    r3 = _run(out, "--stages=bogus")
    assert r3.returncode == 1 and "unknown stage" in r3.stderr


def _section(report, heading):
    start = report.index(heading)
    end = report.find("\n## ", start + 1)
    return report[start:end if end >= 0 else None]


@pytest.mark.skipif(not HAVE_FASHION, reason=f"real Fashion-MNIST not installed in {FASHION_DIR} "
                    f"(apt-get install {FASHION_PACKAGE})")
def test_delay_study_real_smoke_reports_table_and_wall_time(tmp_path):
    out = tmp_path / "rep"
    r = _run(out, "--stages=delay_study_real")
    assert r.returncode == 0, r.stderr[-3000:]
    sec = _section((out / "REPORT.md").read_text(), "## 2b. Pipeline gradient delays on real data")
    assert "skipped" not in sec
    assert "`fc_small`: fashion_mnist, 64 training / 64 test images" in sec
    assert re.search(r"\| fc_small \| none \| 0,0 \| 1 \| \d+\.\d\d % \|", sec)
    assert re.search(r"\| fc_small \| 1f1b \| 1,0 \| 1 \| \d+\.\d\d % \|", sec)
    # the total training time is the sum of the per-setting times in the table's last column
    total = float(re.search(r"2 training runs took \*\*([\d,.]+) s\*\*", sec).group(1).replace(",", ""))
    per_setting = [float(m.replace(",", "")) for m in re.findall(r"\| ([\d,]+\.\d) \|\n", sec)]
    assert len(per_setting) == 2 and all(t > 0 for t in per_setting)
    assert abs(total - sum(per_setting)) <= 0.15
    assert (out / "delay_study_real" / "delay_study.png").read_bytes()[:4] == b"\x89PNG"


def test_delay_study_real_at_quick_scale_needs_the_flag(tmp_path):
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-m", "scripts.reproduce", "--scale=quick", f"--out={out}",
                        "--stages=delay_study_real"], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    sec = _section((out / "REPORT.md").read_text(), "## 2b. Pipeline gradient delays on real data")
    want = ("pass --real_data to run it" if HAVE_FASHION else
            f"skipped: Fashion-MNIST not installed in {FASHION_DIR}")
    assert want in sec and "| network |" not in sec
    assert not (out / "stages").exists()  # nothing ran, nothing cached


def test_delay_study_real_without_the_data_says_how_to_install_them(tmp_path):
    """The machine without Fashion-MNIST, simulated by pointing the default folder elsewhere."""
    missing = tmp_path / "no-fashion-mnist"
    out = tmp_path / "rep"
    code = ("import runpy, sys\n"
            "from spikepipe_jax.data import idx\n"
            f"idx.DEFAULT_DIRS = {{'fashion_mnist': ({str(missing)!r}, 'dataset-fashion-mnist')}}\n"
            f"sys.argv = ['reproduce', '--scale=smoke', '--out={out}', '--stages=delay_study_real']\n"
            "runpy.run_module('scripts.reproduce', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage delay_study_real: skipped" in r.stdout
    sec = _section((out / "REPORT.md").read_text(), "## 2b. Pipeline gradient delays on real data")
    assert (f"skipped: Fashion-MNIST not installed in {missing} (apt-get install dataset-fashion-mnist)."
            in sec)
    assert "| network |" not in sec and not (out / "stages").exists()
