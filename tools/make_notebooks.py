"""Writes notebooks/*.ipynb from the cell sources below (outputs stripped). Run after editing:

    .venv/bin/python tools/make_notebooks.py

Figures appear inline (``%matplotlib inline`` in the set-up cell; Jupyter, Colab and nbclient
all render them as ``image/png`` outputs). A cell that draws one is made with :func:`figure_cell`,
which tags it ``figure``; ``tests/test_notebooks.py`` checks that each tagged cell produced an
image and that every cell drawing with ``plt.`` or ``Image(`` is tagged.
"""
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

FIGURE_TAG = "figure"


def figure_cell(source: str):
    """A code cell that draws a figure (tagged, so the notebook test expects an image from it)."""
    return new_code_cell(source, metadata={"tags": [FIGURE_TAG]})

SETUP = '''# Colab: install the package from its repository (set REPO to your clone's URL); locally: nothing to do.
import os, sys
if "google.colab" in sys.modules:
    REPO = os.environ.get("SPIKEPIPE_REPO", "https://github.com/spikepipe/spikepipe_jax")
    !git clone -q {REPO} /content/spikepipe_jax 2>/dev/null || true
    %cd /content/spikepipe_jax
    !pip install -q -e .
elif not os.path.exists("spikepipe_jax") and os.path.exists("../spikepipe_jax"):
    os.chdir("..")  # started from notebooks/: work from the repository root
sys.path.insert(0, os.getcwd())
%matplotlib inline
import matplotlib.pyplot as plt
import jax, jax.numpy as jnp, numpy as np
print("jax", jax.__version__, "devices", jax.devices())'''

NB1 = [
    new_markdown_cell("# 1. LIF neurons, surrogate gradients and BPTT with `lax.scan`\n\n"
                      "Pure-functional leaky integrate-and-fire neurons with snnTorch 1.0 `Leaky` semantics, "
                      "surrogate spike functions, and backpropagation through time."),
    new_code_cell(SETUP),
    new_markdown_cell("## A neuron driven by a noisy current\n`lif_scan` runs `lif_step` over the leading time axis."),
    figure_cell('''from spikepipe_jax import snn
T = 100
current = 0.25 + 0.1 * jax.random.normal(jax.random.key(0), (T, 1))
spk, mem = snn.lif_scan(current, beta=0.9, threshold=1.0, reset="subtract")
fig, (a, b) = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
a.plot(mem[:, 0]); a.axhline(1.0, ls="--", c="k", lw=0.8); a.set_ylabel("membrane U[t]")
b.eventplot(np.where(np.asarray(spk[:, 0]) > 0)[0]); b.set_ylabel("spikes"); b.set_xlabel("time step t")
print("spikes:", int(spk.sum()))'''),
    new_markdown_cell("## Surrogate gradients\nForward: exact Heaviside. Backward: a smooth stand-in."),
    figure_cell('''x = jnp.linspace(-1.5, 1.5, 301)
for name, fn in [("fast_sigmoid(25)", snn.fast_sigmoid(25.0)), ("arctan(2)", snn.arctan(2.0))]:
    plt.plot(x, jax.vmap(jax.grad(fn))(x), label=name)
plt.xlabel("U - threshold"); plt.ylabel("dS/dU (surrogate)"); plt.legend()
assert (snn.fast_sigmoid()(x) == (x > 0)).all()'''),
    new_markdown_cell("## BPTT through the scan\nThe gradient of the spike count w.r.t. every input current, by reverse-mode through `lax.scan`."),
    figure_cell('''grad = jax.grad(lambda c: snn.lif_scan(c, beta=0.9, surrogate=snn.fast_sigmoid())[0].sum())(current)
plt.plot(grad[:, 0]); plt.xlabel("time step t"); plt.ylabel("d(spike count)/d I[t]")
print("finite:", bool(jnp.isfinite(grad).all()))'''),
    new_markdown_cell("## Train a spiking network on the bundled digits\n`configs/fc_digits.py` with a few epochs."),
    figure_cell('''import importlib, tempfile
from spikepipe_jax import train
config = importlib.import_module("configs.fc_digits").get_config()
config.train.epochs = 3
workdir = tempfile.mkdtemp()
summary = train.train_and_evaluate(config, workdir, log=lambda m: None)
acc = [a for _, a in train.eval_curve(workdir)]
plt.plot(range(1, len(acc) + 1), acc, "o-"); plt.xlabel("epoch"); plt.ylabel("test accuracy")
print("test accuracy", summary["test_accuracy"])'''),
]

NB2 = [
    new_markdown_cell("# 2. Delayed gradients: the accuracy side of inter-layer pipelining\n\n"
                      "With L layers pipelined, layer l's update uses a gradient d_l steps old. "
                      "`delayed_gradients` is an optax transform that does exactly that."),
    new_code_cell(SETUP),
    new_code_cell('''import optax
from spikepipe_jax import train
tx = optax.chain(train.delayed_gradients({"a": 2, "b": 0}), optax.sgd(1.0))
params = {"a": jnp.zeros(()), "b": jnp.zeros(())}
state = tx.init(params)
for k in range(5):
    g = {"a": jnp.float32(k + 1), "b": jnp.float32(k + 1)}
    u, state = tx.update(g, state)
    print(f"step {k}: gradient {k + 1}; update a = {float(u['a']):+.0f} (2 steps late), b = {float(u['b']):+.0f}")'''),
    new_markdown_cell("## Pipeline delays for 1F1B and the fully pipelined timeline\n"
                      "`schedule.delays_for` walks each schedule's timeline."),
    new_code_cell('''from spikepipe_jax.schedule import delays_for
L = 8
print("1F1B           ", delays_for("1f1b", num_layers=L))
print("fully pipelined", delays_for("fully_pipelined", num_layers=L))'''),
    new_markdown_cell("## Train the deep network with and without 1F1B delays (and a mitigation)"),
    figure_cell('''import importlib, tempfile
curves = {}
for name, delays, mitigation in [("no delay", "none", "none"), ("1F1B delays", "1f1b", "none"),
                                 ("1F1B + weight prediction", "1f1b", "weight_prediction")]:
    c = importlib.import_module("configs.deep_digits").get_config()
    c.train.epochs = 4
    c.pipeline.delays, c.pipeline.mitigation = delays, mitigation
    wd = tempfile.mkdtemp()
    s = train.train_and_evaluate(c, wd, log=lambda m: None)
    curves[name] = [a for _, a in train.eval_curve(wd)]
    print(f"{name:28s} test accuracy {s['test_accuracy']:.3f}")
for name, acc in curves.items():
    plt.plot(range(1, len(acc) + 1), acc, "o-", label=name)
plt.xlabel("epoch"); plt.ylabel("test accuracy"); plt.legend(); plt.show()'''),
]

NB3 = [
    new_markdown_cell("# 3. Systolic-array cost model and multiprocessor scheduling\n\n"
                      "GEMM cycles on an R×C array (SCALE-Sim 3.0.0 semantics) in `jax.numpy`, swept with `vmap`; "
                      "the SNN training tasks of a network; a SpikePipe schedule on P arrays vs PipeDream 1F1B."),
    new_code_cell(SETUP),
    figure_cell('''from spikepipe_jax import hardware
sizes = jnp.array([8, 16, 32, 64, 128, 256])
# one jitted, vmapped call: conv_medium's second-layer forward GEMM on square arrays, 3 dataflows
m, k, n = 204800, 300, 64
cyc = {df: jax.jit(jax.vmap(lambda r: hardware.gemm_cycles(m, k, n, r, r, df)))(sizes)
       for df in ("os", "ws", "is")}
for df, c in cyc.items():
    plt.loglog(sizes, c, "o-", label=df)
plt.xlabel("array rows = cols"); plt.ylabel("cycles"); plt.legend(title="dataflow")
print({df: [int(x) for x in c] for df, c in cyc.items()})'''),
    new_code_cell('''import importlib
config = importlib.import_module("configs.conv_medium").get_config()
tasks = hardware.training_tasks_from_config(config, rows=32, cols=32, dataflow="ws")
for t in tasks:
    print(f"{t['name']:4s} cycles {t['cycles']:>12,}  GEMM {t['gemm']}")'''),
    figure_cell('''from spikepipe_jax import schedule as sch
from spikepipe_jax.schedule import study
from spikepipe_jax.report.schedule_report import plot_gantt
P = 4
result, schedules = study.compare_training(tasks, P, cols=32, dataflow="ws")
print("lower bound on the period:", f"{result['lower_bound']:,} cycles")
for name, entry in result["methods"].items():
    sch.validate(schedules[name])  # the independent validator accepts every schedule
    print(f"{name:18s} period {entry['period']:>12,}  delays {entry['delays']}")
plot_gantt({k: schedules[k] for k in ("spikepipe", "pipedream_1f1b")}, "/tmp/gantt_nb.png",
           title=f"conv_medium, 32x32 ws, P={P}", label_tasks=False)
from IPython.display import Image
Image("/tmp/gantt_nb.png")'''),
]


def main():
    here = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
    here.mkdir(exist_ok=True)
    for name, cells in [("01_lif_surrogate_bptt", NB1), ("02_delayed_gradients", NB2),
                        ("03_cost_model_scheduling", NB3)]:
        for i, cell in enumerate(cells):  # fixed ids: regenerating gives the same files
            cell["id"] = f"{name[:2]}-{i:02d}"
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "colab": {"provenance": []}})
        nbformat.write(nb, here / f"{name}.ipynb")
        print("wrote", here / f"{name}.ipynb")


if __name__ == "__main__":
    main()
