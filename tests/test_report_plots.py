"""The report's plotting functions leave matplotlib's backend alone: a notebook that shows figures
inline (``%matplotlib inline``) keeps doing so after drawing one of ours. Each function is also
checked to write a PNG."""
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: the backend is chosen once per process, and this one must be the
# notebook's (matplotlib_inline), not whatever the test session picked.
_SCRIPT = textwrap.dedent('''
    import os, sys
    import matplotlib
    matplotlib.use("module://matplotlib_inline.backend_inline")
    import matplotlib.pyplot as plt
    before = matplotlib.get_backend()
    out = sys.argv[1]

    from spikepipe_jax.report import accuracy_curves_png
    from spikepipe_jax.report.schedule_report import plot_gantt, plot_speedups, plot_tradeoff
    from spikepipe_jax.schedule import generators, study

    backends = {}
    curve = [(0, 0.5), (1, 0.7)]
    png = accuracy_curves_png([dict(net="n", setting=s, curve=curve) for s in ("none", "1f1b")])
    backends["accuracy_curves_png"] = matplotlib.get_backend()
    open(os.path.join(out, "curves.png"), "wb").write(png)
    result, schedules = study.compare_training(generators.toy_training_tasks(3, seed=2), 2)
    plot_gantt(schedules, os.path.join(out, "gantt.png"))
    backends["plot_gantt"] = matplotlib.get_backend()
    row = study.summary_row(result, net="toy", array="32x32", dataflow="ws")
    plot_speedups([row], os.path.join(out, "speedups.png"))
    backends["plot_speedups"] = matplotlib.get_backend()
    plot_tradeoff({"toy": {"2": {"nosplit": {"0": 1.0, "1": 1.2}}}}, os.path.join(out, "tradeoff.png"))
    backends["plot_tradeoff"] = matplotlib.get_backend()
    print("BEFORE", before)
    for k, v in backends.items():
        print("AFTER", k, v)
    print("OPEN_FIGURES", len(plt.get_fignums()))
''')


def test_plotting_functions_keep_the_notebook_backend(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("MPLBACKEND", None)
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    before = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("BEFORE ")]
    assert before == ["module://matplotlib_inline.backend_inline"]
    after = {ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("AFTER ")}
    assert set(after) == {"accuracy_curves_png", "plot_gantt", "plot_speedups", "plot_tradeoff"}
    assert all(b == before[0] for b in after.values()), after
    # nothing registered with pyplot (which the inline backend would display at the cell's end)
    assert "OPEN_FIGURES 0" in lines
    for name in ("curves", "gantt", "speedups", "tradeoff"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
