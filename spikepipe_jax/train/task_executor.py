r"""A SpikePipe schedule executed task by task: ``F``, ``BL``, ``BG`` and ``W`` of every layer on the
processor the scheduler chose, in its order (one process; each processor one device).

The training graph of :mod:`spikepipe_jax.schedule.training_graph` (``split_backward=True``)
has four tasks per layer ``l``; here each is one jitted program on the device of its processor:

* ``F_l`` (iteration ``i``): the layer's synapse (:func:`spikepipe_jax.snn.layer_currents`) and
  its LIF recurrence (:func:`spikepipe_jax.snn.layer_neurons`; the loss too for the output
  layer) at weight version ``max(0, i - d_l)``; keeps its input, the weights it used (PipeDream's
  weight stashing) and the LIF recurrence's vjp;
* ``BL_l``: that vjp applied to the gradient of the layer's spikes (from ``BG_{l+1}``; the
  loss's cotangent 1 for the output layer): the gradient of the layer's currents, and of its
  bias (and beta);
* ``BG_l`` (``l > 0``): the synapse's vjp in its input at the kept weights: the gradient of the
  previous layer's spikes;
* ``W_l``: the synapse's vjp in its weights at the kept input, then the layer's optimiser
  update, which makes weight version ``i + 1``.

``d_l`` is what :func:`spikepipe_jax.schedule.delays_for` reads from the schedule's timeline
(the updates of layer ``l`` that end after ``F_l(i)`` starts), so the run equals the single-device
simulator with weight stashing at those delays (``pipeline.simulate="stash"``,
``tests/test_task_executor.py``). Tasks run in the order of their start times in the unrolled
schedule (``(i + offset) * period + start``), which respects every dependency of a valid
schedule; a processor therefore runs its own tasks in the schedule's order. Messages between
tasks on different devices are ``jax.device_put`` calls.

What of a schedule is executed: the placement and order of every task of every layer, and the
delays its timeline implies. What is not: the durations and the period (tasks take as long as
they take on the device), split tasks (only schedules without splits: ``info["split"]`` empty),
and several processes (the transport of :mod:`spikepipe_jax.train.async_executor` would carry the
messages; not wired here).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from spikepipe_jax import snn
from spikepipe_jax.io import atomic_write_bytes
from spikepipe_jax.train import checkpoint, losses

KINDS = ("F", "BL", "BG", "W")
CHECKPOINT_FILE = "checkpoint_tasks.msgpack"  # in the run's workdir (the previous one kept beside it)


def config_schedule(config, processors: int):
    """The SpikePipe schedule ``scripts.schedule`` makes for this config's network on
    ``processors`` processors (the cost model's tasks with ``config.hardware``, LayerPipe2's
    delays on the update loops, the backward split into LIF and GEMM parts, ideal links, no task
    splitting), validated, and the delays its timeline implies."""
    from spikepipe_jax.hardware.mapping import training_tasks_from_config
    from spikepipe_jax.schedule import delays_for, validate
    from spikepipe_jax.schedule.policies import spikepipe_schedule
    from spikepipe_jax.schedule.retiming import layerpipe_delays
    from spikepipe_jax.schedule.training_graph import graph_from_tasks

    tasks = training_tasks_from_config(config)
    g = graph_from_tasks(tasks, delays=layerpipe_delays(len(tasks) // 3), split_backward=True)
    sched = spikepipe_schedule(g, processors)
    validate(sched)  # raises naming the violations
    return sched, [int(d) for d in delays_for(sched)]


def _task_kind(name: str) -> tuple[str, int]:
    for kind in ("BL", "BG", "F", "W"):
        if name.startswith(kind) and name[len(kind):].isdigit():
            return kind, int(name[len(kind):])
    raise ValueError(f"task {name!r} is not an unsplit F/BL/BG/W task of one layer (split schedules are not "
                     f"executed)")


class TaskExecutor:
    """Runs a SpikePipe schedule's tasks (module docstring). ``step`` feeds one mini-batch and runs
    every task that starts before the next mini-batch's first one; ``drain`` finishes the rest."""

    def __init__(self, model: snn.ModelDef, schedule, delays: Sequence[int], tx: optax.GradientTransformation, *,
                 loss_name: str, num_classes: int, encode_fn: Callable, devices: Optional[Sequence[Any]] = None,
                 batch_size: int = 0, num_steps: int = 0, input_shape: Sequence[int] = ()):
        if jax.process_count() > 1:
            raise ValueError("pipeline.execute='spikepipe' runs in one process (its tasks' messages between "
                             "processes are not wired yet); use 1f1b or gpipe across processes")
        self.model = model._replace(native="off")
        # batch_size, num_steps, input_shape: the shapes of a restored checkpoint's kept vjps
        self.batch_size, self.num_steps, self.input_shape = batch_size, num_steps, tuple(input_shape)
        self.tx, self.loss_name, self.num_classes, self.encode_fn = tx, loss_name, num_classes, encode_fn
        self.delays = [int(d) for d in delays]
        self.names = [info.name for info in model.infos]
        n_layers = model.num_layers
        if len(self.delays) != n_layers:
            raise ValueError(f"{len(self.delays)} delays for {n_layers} layers")
        self.period = schedule.period
        self.tasks = []  # (start within the unrolled schedule for iteration 0, kind, layer, processor)
        for p in schedule.placements:
            kind, layer = _task_kind(p.task)
            if not 0 <= layer < n_layers:
                raise ValueError(f"task {p.task!r}: no layer {layer} in a {n_layers}-layer network")
            self.tasks.append((p.iteration_offset * schedule.period + p.start, kind, layer, p.processor))
        have = {(k, l) for _, k, l, _ in self.tasks}
        want = {(k, l) for l in range(n_layers) for k in KINDS if not (k == "BG" and l == 0)}
        if have != want:
            raise ValueError(f"the schedule's tasks {sorted(have)} are not one F/BL/BG/W per layer "
                             f"(missing {sorted(want - have)})")
        devices = list(jax.devices() if devices is None else devices)
        if len(devices) < schedule.processors:
            raise ValueError(f"the schedule uses {schedule.processors} processors, {len(devices)} device(s) given")
        self.device = {(k, l): devices[proc] for _, k, l, proc in self.tasks}
        self.tasks.sort()
        self._f = [jax.jit(self._forward(l)) for l in range(n_layers)]
        self._bl = jax.jit(lambda vjp, g: vjp(g))
        self._bg = [jax.jit(self._input_grad(l)) for l in range(n_layers)]
        self._w = [jax.jit(self._weight_update(l)) for l in range(n_layers)]

    # ----- the programs ------------------------------------------------------------------------
    def _forward(self, l: int):
        model, last = self.model, l == self.model.num_layers - 1
        name = self.names[l]

        def f(p, x, y):
            cur = snn.layer_currents({name: p}, model, x, l)
            neuron_params = {k: v for k, v in p.items() if k != "w"}

            def neurons(c, q):
                out = snn.layer_neurons({name: dict(q, w=p["w"])}, model, c, l)
                if last:
                    return losses.compute_loss(self.loss_name, out, y, self.num_classes), out.logits
                return out
            out, vjp, *aux = jax.vjp(neurons, cur, neuron_params, has_aux=last)
            if last:
                correct = jnp.sum(jnp.argmax(aux[0], -1) == y).astype(jnp.float32)
                return jnp.stack([out, correct]), vjp
            return out, vjp
        return f

    def _input_grad(self, l: int):
        name = self.names[l]

        def bg(p, x, dcur):
            _, vjp = jax.vjp(lambda x_: snn.layer_currents({name: p}, self.model, x_, l), x)
            return vjp(dcur)[0]
        return bg

    def _weight_update(self, l: int):
        name = self.names[l]

        def w(p_latest, opt, p_used, x, dcur, dneuron):
            _, vjp = jax.vjp(lambda w_: snn.layer_currents({name: dict(p_used, w=w_)}, self.model, x, l),
                             p_used["w"])
            grads = dict(dneuron, w=vjp(dcur)[0])
            upd, opt = self.tx.update(grads, opt, p_latest)
            return optax.apply_updates(p_latest, upd), opt
        return w

    # ----- state and running ---------------------------------------------------------------------
    def init(self, params) -> dict:
        """The state: per layer its weight versions (version -> parameters, on its ``W`` task's
        device), optimiser state and updates done; the values kept for iterations in flight
        (``kept``: spikes, inputs, weights used, vjps, gradients), their host batches
        (``inputs``), the tasks run of unfinished iterations (``ran``), the iterations fed and the
        first unfinished one."""
        layers = []
        for l, n in enumerate(self.names):
            dev = self.device[("W", l)]
            p = jax.device_put(params[n], dev)
            layers.append({"versions": {0: p}, "opt": jax.device_put(self.tx.init(params[n]), dev), "updates": 0})
        return {"layers": layers, "kept": {}, "inputs": {}, "ran": set(), "fed": 0, "done_tasks_from": 0}

    @staticmethod
    def _copy(state: dict) -> dict:
        """A new state sharing the arrays (the step does not change its argument)."""
        return dict(state, layers=[dict(lay, versions=dict(lay["versions"])) for lay in state["layers"]],
                    kept=dict(state["kept"]), inputs=dict(state["inputs"]), ran=set(state["ran"]))

    def _ready(self, state: dict, horizon: int) -> list:
        """Tasks of fed iterations not run yet that start before ``horizon`` (unrolled time)."""
        out = []
        for i in range(state["done_tasks_from"], state["fed"]):
            for t0, kind, l, proc in self.tasks:
                start = t0 + i * self.period
                if start < horizon and (kind, l, i) not in state["ran"]:
                    out.append((start, proc, kind, l, i))
        return sorted(out)

    def _run_task(self, state: dict, kind: str, l: int, i: int, key) -> None:
        """Runs one task of iteration ``i`` (updates ``state`` in place: the caller's copy)."""
        kept, lay = state["kept"], state["layers"][l]
        dev = self.device[(kind, l)]
        last = l == self.model.num_layers - 1
        if kind == "F":
            v = max(0, i - self.delays[l])
            if v not in lay["versions"]:
                raise RuntimeError(f"F{l} of iteration {i} needs weight version {v}, which the schedule has not "
                                   f"made yet (delays {self.delays} do not match its order)")
            p = jax.device_put(lay["versions"][v], dev)
            if l == 0:
                x, y = state["inputs"][i]
                x = self.encode_fn(jax.device_put(x, dev), jax.random.fold_in(key, i)).astype(jnp.float32)
            else:
                x = jax.device_put(kept.pop(("spk", l - 1, i)), dev)
                y = state["inputs"][i][1]
            out, vjp = self._f[l](p, x, jax.device_put(y, dev) if last else None)
            kept[("x", l, i)], kept[("p", l, i)], kept[("vjp", l, i)] = x, p, vjp
            if last:
                kept[("met", i)] = out
            else:
                kept[("spk", l, i)] = out
            lay["versions"] = {k: w for k, w in lay["versions"].items() if k >= v}  # older ones are never read
            return
        if kind == "BL":
            g = jnp.ones((), jnp.float32) if last else jax.device_put(kept.pop(("g", l, i)), dev)
            dcur, dneuron = self._bl(jax.device_put(kept.pop(("vjp", l, i)), dev), g)
            kept[("dcur", l, i)], kept[("dneuron", l, i)] = dcur, dneuron
            return
        if kind == "BG":
            p, x = jax.device_put(kept[("p", l, i)], dev), jax.device_put(kept[("x", l, i)], dev)
            kept[("g", l - 1, i)] = self._bg[l](p, x, jax.device_put(kept[("dcur", l, i)], dev))
            return
        # W: the update that makes version i + 1 (tasks of one layer run in iteration order)
        if lay["updates"] != i:
            raise RuntimeError(f"W{l} of iteration {i} would be update {lay['updates']}")
        latest = jax.device_put(lay["versions"][max(lay["versions"])], dev)
        p_used = jax.device_put(kept[("p", l, i)], dev)
        x, dcur = jax.device_put(kept[("x", l, i)], dev), jax.device_put(kept[("dcur", l, i)], dev)
        new, lay["opt"] = self._w[l](latest, lay["opt"], p_used, x, dcur,
                                     jax.device_put(kept.pop(("dneuron", l, i)), dev))
        lay["versions"][i + 1] = new
        lay["updates"] = i + 1

    def _advance(self, state: dict, horizon: float, key) -> list:
        """Runs every task that starts before ``horizon``; returns the metrics of the iterations
        whose last task ran."""
        finished = []
        for start, proc, kind, l, i in self._ready(state, horizon):
            self._run_task(state, kind, l, i, key)
            state["ran"].add((kind, l, i))
            if all((k, ll, i) in state["ran"] for _, k, ll, _ in self.tasks):
                finished.append(state["kept"].pop(("met", i)))
                for k in [k for k in state["kept"] if k[-1] == i]:
                    del state["kept"][k]
                state["ran"] = {r for r in state["ran"] if r[2] != i}
                state["inputs"].pop(i)
                state["done_tasks_from"] = i + 1
        return finished

    def step(self, state: dict, x, y, key) -> tuple[dict, list]:
        """Feeds iteration ``fed`` (host ``x`` ``[B, ...]``, ``y`` ``[B]``) and runs the tasks that
        start before iteration ``fed + 1``'s first; returns the new state and the metrics of the
        iterations that finished (:meth:`_metrics`)."""
        state = self._copy(state)
        state["key"] = key
        i = state["fed"]
        state["inputs"][i] = (np.asarray(x), np.asarray(y))
        state["fed"] = i + 1
        first = min(t0 for t0, *_ in self.tasks)
        return state, self._metrics(self._advance(state, first + (i + 1) * self.period, key))

    def _metrics(self, finished: list) -> dict:
        """Loss / accuracy of the iterations that finished (``count``; ``finished``: their
        ``[loss, correct]``); ``finite``: their losses."""
        if not finished:
            return {"loss": 0.0, "accuracy": 0.0, "count": 0, "finite": True, "finished": []}
        met = np.asarray(jnp.stack([jax.device_get(m) for m in finished]))
        return {"loss": float(met[:, 0].mean()), "accuracy": float(met[:, 1].sum() / (len(met) * self.batch_size))
                if self.batch_size else float("nan"), "count": len(met),
                "finite": bool(np.isfinite(met[:, 0]).all()), "finished": list(met)}

    def drain(self, state: dict, key=None) -> tuple[dict, list]:
        """Runs every task left (no new iteration enters; ``key``: the steps' encoder key)."""
        state = self._copy(state)
        return state, self._metrics(self._advance(state, float("inf"), state.get("key") if key is None else key))

    # ----- checkpoints -------------------------------------------------------------------------
    def save(self, path: str, state: dict) -> None:
        """Writes the whole state (weight versions, optimiser states, the values kept for
        iterations in flight, their batches; the LIF vjps as their arrays) atomically, keeping
        the previous file (:func:`spikepipe_jax.train.checkpoint.prev_path`)."""
        host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
        kept = {}
        for k, v in state["kept"].items():
            name = "|".join(str(part) for part in k)
            kept[name] = ({str(j): a for j, a in enumerate(host(jax.tree.leaves(v)))} if k[0] == "vjp" else host(v))
        blob = {"layers": {str(l): {"versions": {str(v): host(p) for v, p in lay["versions"].items()},
                                    "opt": flax.serialization.to_state_dict(host(lay["opt"])),
                                    "updates": lay["updates"]} for l, lay in enumerate(state["layers"])},
                "kept": kept, "inputs": {str(i): {"x": x, "y": y} for i, (x, y) in state["inputs"].items()},
                "ran": ["|".join(str(part) for part in r) for r in sorted(state["ran"])],
                "fed": state["fed"], "done_tasks_from": state["done_tasks_from"],
                "key": np.asarray(jax.random.key_data(state["key"])) if "key" in state else np.zeros(0, np.uint32)}
        if os.path.exists(path):
            os.replace(path, checkpoint.prev_path(path))
        atomic_write_bytes(path, flax.serialization.msgpack_serialize(blob))

    def _read(self, path: str, template: dict) -> dict:
        try:
            with open(path, "rb") as f:
                blob = flax.serialization.msgpack_restore(f.read())
            layers = []
            for l, tmpl in enumerate(template["layers"]):
                d, dev = blob["layers"][str(l)], self.device[("W", l)]
                p0 = tmpl["versions"][0]
                layers.append({"versions": {int(v): jax.device_put(flax.serialization.from_state_dict(p0, p), dev)
                                            for v, p in d["versions"].items()},
                               "opt": jax.device_put(flax.serialization.from_state_dict(tmpl["opt"], d["opt"]), dev),
                               "updates": int(d["updates"])})
            kept, treedefs = {}, {}  # one trace per layer
            for name, v in blob["kept"].items():
                parts = name.split("|")
                k = (parts[0],) + tuple(int(q) for q in parts[1:])
                if k[0] == "vjp":
                    if k[1] not in treedefs:
                        treedefs[k[1]] = self._vjp_treedef(k[1], layers[k[1]]["versions"])
                    treedef = treedefs[k[1]]
                    v = jax.tree.unflatten(treedef, [jnp.asarray(v[str(j)]) for j in range(len(v))])
                elif isinstance(v, dict):  # a parameter dict (weights kept for BG / W)
                    v = jax.tree.map(jnp.asarray, v)
                else:
                    v = jnp.asarray(v)
                kept[k] = v
            ran = set()
            for r in blob["ran"]:
                kind, l, i = r.split("|")
                ran.add((kind, int(l), int(i)))
            state = {"layers": layers, "kept": kept,
                     "inputs": {int(i): (e["x"], e["y"]) for i, e in blob["inputs"].items()},
                     "ran": ran, "fed": int(blob["fed"]), "done_tasks_from": int(blob["done_tasks_from"])}
            if blob["key"].size:
                state["key"] = jax.random.wrap_key_data(jnp.asarray(blob["key"]))
            return state
        except Exception as e:  # damaged, or from another network / schedule
            raise ValueError(f"checkpoint {path} is corrupt or does not match this config: "
                             f"{type(e).__name__}: {e}") from None

    def _vjp_treedef(self, l: int, versions: dict):
        p = next(iter(versions.values()))
        t, b = self.num_steps, self.batch_size
        shape = self.input_shape if l == 0 else tuple(self.model.infos[l - 1].out_shape)
        x = jax.ShapeDtypeStruct((t, b) + tuple(shape), jnp.float32)
        y = jax.ShapeDtypeStruct((b,), jnp.int32) if l == self.model.num_layers - 1 else None
        return jax.tree.structure(self._f[l].eval_shape(p, x, y)[1])

    def restore_latest(self, path: str, template: dict, *, warn: Callable[[str], None]):
        """The newest readable checkpoint at ``path`` (the previous one if the newest is damaged,
        saying so: :func:`spikepipe_jax.train.checkpoint.read_latest`); ``None`` if there is none."""
        return checkpoint.read_latest(path, lambda p: self._read(p, template), warn=warn)

    def params(self, state: dict) -> dict:
        """The network's newest parameters (host arrays)."""
        return {n: jax.device_get(lay["versions"][max(lay["versions"])])
                for n, lay in zip(self.names, state["layers"])}
