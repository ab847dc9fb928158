"""The asynchronous 1F1B executor's parts that run in one process: its action order, its predicted
step time, its message bytes and the TCP transport. Its equality with the simulator runs on 1-8
fake devices in tests/executor_cases.py (``err_async``); the command line, kill -9 resume and two
processes in tests/test_executor.py."""

import threading

import numpy as np
import pytest

from spikepipe_jax import experiments, snn
from spikepipe_jax.schedule import delays_for
from spikepipe_jax.train import async_executor, checkpoint, executor, transport
from spikepipe_jax.train import stages as stages_lib


@pytest.mark.parametrize("num_stages", [1, 2, 3, 5])
def test_stage_actions_follow_the_tick_table_and_give_1f1b_delays(num_stages):
    """Every stage alternates F and B as in executor.tick_table, and between the forward of a
    mini-batch and its update a stage applies S - 1 - s other updates (PipeDream's delays)."""
    fed = 12
    table = executor.tick_table(executor.Plan("1f1b", tuple((i, i + 1) for i in range(num_stages)), 1, 1))
    for s in range(num_stages):
        acts = async_executor.stage_actions(num_stages, s, 0, 2 * fed + 2 * num_stages, fed)
        assert [k for _, k, _ in acts].count("F") == fed and [k for _, k, _ in acts].count("B") == fed
        for g, kind, _ in acts:
            assert table[g % 2][s][0] == kind
        updates = [m for _, k, m in acts if k == "B"]
        assert updates == list(range(fed))  # one update per mini-batch, in order
        for g, kind, m in acts:
            if kind == "F" and m >= num_stages:  # past the fill
                b_tick = next(t for t, k, mm in acts if k == "B" and mm == m)
                assert sum(1 for t, k, _ in acts if k == "B" and g < t < b_tick) == num_stages - 1 - s
    smap = list(range(num_stages))
    assert delays_for("1f1b", num_layers=num_stages, stages=smap) == [num_stages - 1 - s for s in smap]


@pytest.mark.parametrize("fwd,bwd", [([1.0, 1.0], [2.0, 2.0]), ([0.22, 0.24], [0.51, 0.57]),
                                     ([1.0] * 6, [2.0] * 6), ([0.5, 2.0, 0.5], [1.0, 3.0, 1.0])])
def test_predicted_step_time_is_the_slowest_stage(fwd, bwd):
    """The timeline of the executor's per-stage order: a full pipeline's step costs the slowest
    stage's F + B (not the tick-synchronous max(F_0, B_1) + max(B_0, F_1))."""
    got = async_executor.predicted_step_time(fwd, bwd)
    slowest = max(f + b for f, b in zip(fwd, bwd))
    assert slowest * 0.97 <= got <= slowest * 1.0001
    if len(fwd) == 2:
        ticks = executor.predicted_step_time(executor.Plan("1f1b", ((0, 1), (1, 2)), 1, 1), fwd, bwd)
        assert got <= ticks


@pytest.mark.parametrize("num_stages,micro", [(1, 1), (2, 4), (3, 2), (4, 8)])
def test_gpipe_order_and_its_predicted_step(num_stages, micro):
    """GPipe, asynchronously: each stage runs the forwards of micro-batches 0..M-1, then their
    backwards in reverse, in a tick order where everything an action needs comes earlier; with
    equal stages a step is GPipe's (M + S - 1)(F + B) (the fill and the drain included)."""
    acts = {s: async_executor.gpipe_actions(num_stages, s, micro) for s in range(num_stages)}
    tick = {(kind, m, s): g for s, a in acts.items() for g, kind, m in a}
    for s, a in acts.items():
        assert [(k, m) for _, k, m in a] == [("F", m) for m in range(micro)] + [("B", m) for m in reversed(range(micro))]
        assert [g for g, _, _ in a] == sorted(g for g, _, _ in a)
    for (kind, m, s), g in tick.items():
        needs = ([("F", m, s - 1)] if kind == "F" and s > 0 else []) + \
                ([("F", m, s)] + ([("B", m, s + 1)] if s < num_stages - 1 else []) if kind == "B" else [])
        assert all(tick[n] < g for n in needs)
    f, b = 0.3, 0.5
    got = async_executor.predicted_step_time([f] * num_stages, [b] * num_stages, microbatches=micro)
    assert got == pytest.approx((micro + num_stages - 1) * (f + b))
    slow = async_executor.predicted_step_time([f] * (num_stages - 1) + [2 * f], [b] * num_stages, microbatches=micro)
    assert slow > got or num_stages == 1 and slow == pytest.approx(micro * (2 * f + b))


@pytest.mark.parametrize("net,num_stages", [("fc_digits", 2), ("conv_digits", 3), ("deep_digits", 4)])
def test_message_bytes_are_the_cost_models(net, num_stages):
    """Spikes go bit-packed, gradients as float32: what one step sends is
    executor.boundary_bytes (the cost model's schedule.comm of the same placement, checked in
    test_executor.py) plus the three metric scalars per boundary (when a stage's spikes per
    sample are a multiple of 8 bits; else each row rounds up to whole bytes)."""
    cfg = experiments.load_config(net, "smoke")
    cfg.pipeline.execute, cfg.pipeline.stages = "1f1b", num_stages
    model = snn.model_from_config(cfg.model)
    plan = executor.make_plan(cfg, num_stages)
    ax = async_executor.AsyncExecutor.__new__(async_executor.AsyncExecutor)  # no devices needed
    ax.model, ax.plan, ax.num_stages = model, plan, num_stages
    ax.num_steps, ax.batch_size = cfg.model.num_steps, cfg.train.batch_size
    want = executor.boundary_bytes(model, plan.stages, ax.batch_size, ax.num_steps) + 12 * (num_stages - 1)
    widths = [int(np.prod(snn.stage_out_shape(model, st))) for st in plan.stages[:-1]]
    if all(w % 8 == 0 for w in widths):
        assert ax.bytes_per_step() == want
    else:
        assert want <= ax.bytes_per_step() <= want + ax.num_steps * ax.batch_size * (num_stages - 1)


class _KV:
    """The part of the jax.distributed key-value client the transport uses."""

    def __init__(self):
        self.d, self.cond = {}, threading.Condition()

    def key_value_set(self, k, v):
        with self.cond:
            self.d[k] = v
            self.cond.notify_all()

    def blocking_key_value_get(self, k, ms):
        with self.cond:
            assert self.cond.wait_for(lambda: k in self.d, ms / 1000)
            return self.d[k]


def _pair(timeout_s=30.0):
    kv, out = _KV(), {}

    def make(pid):
        out[pid] = transport.SocketTransport({1 - pid}, process_id=pid, coordinator="localhost:1",
                                             kv_client=kv, timeout_s=timeout_s)
    threads = [threading.Thread(target=make, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out[0], out[1]


def test_socket_transport_carries_arrays_exactly_in_any_order():
    a, b = _pair()
    rng = np.random.default_rng(0)
    msgs = {"spk/0/1": np.packbits(rng.integers(0, 2, (25, 16, 100), dtype=np.uint8), axis=-1),
            "grad/0/0": rng.standard_normal((25, 16, 100)).astype(np.float32),
            "met/0/0": np.array([2.3, 5.0, 1.0], np.float32), "empty": np.zeros((0,), np.float32),
            "big": rng.standard_normal((3, 1 << 20)).astype(np.float32),
            "scalar": np.asarray(0.9, np.float32), "flag": np.asarray(True),  # 0-d arrays stay 0-d
            "strided": rng.standard_normal((6, 8)).astype(np.float32)[:, ::2].T}
    for k, v in msgs.items():
        a.send(1, k, v)
    b.send(0, "back", msgs["grad/0/0"] * 2)
    for k in reversed(list(msgs)):  # received in another order than sent
        got = b.recv(0, k)
        assert got.dtype == msgs[k].dtype and got.shape == msgs[k].shape
        np.testing.assert_array_equal(got, msgs[k])
    np.testing.assert_array_equal(a.recv(1, "back"), msgs["grad/0/0"] * 2)
    with pytest.raises(ValueError, match="no connection to process 5"):
        a.send(5, "x", msgs["empty"])
    a.close()
    b.close()


def test_socket_transport_names_a_peer_that_went_away():
    a, b = _pair()
    import socket
    for sock in a._sockets.values():  # process 0 ends: its connections are shut down
        sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(ConnectionError, match="process 0 went away"):
        b.recv(0, "spk/3/1")


def test_socket_transport_times_out_naming_the_message():
    a, b = _pair(timeout_s=0.2)
    with pytest.raises(TimeoutError, match="no message 'grad/7/0' from process 1"):
        a.recv(1, "grad/7/0")


def test_first_stage_on_process_0_device_count_and_mode_are_checked():
    """Process 0 must hold a device of the first stage; the device count and the mode must fit
    the plan (checked before any work)."""
    cfg = experiments.load_config("fc_digits", "smoke")
    cfg.pipeline.execute, cfg.pipeline.stages = "1f1b", 1
    model = snn.model_from_config(cfg.model)
    plan = executor.make_plan(cfg, 1)

    class Dev:
        def __init__(self, i, p):
            self.id, self.process_index = i, p

    two = executor.Plan("1f1b", ((0, 1), (1, 2)), 1, 1)
    with pytest.raises(ValueError, match=r"the first stage runs on process\(es\) \[1\]; process 0 must hold"):
        async_executor.AsyncExecutor(model, two, None, loss_name="ce_mem",
                                     num_classes=10, encode_fn=None, binary_input=True, batch_size=8, num_steps=2,
                                     input_shape=(8, 8, 1), devices=[Dev(0, 1), Dev(1, 0)])
    with pytest.raises(ValueError, match="needs 2 devices"):
        async_executor.AsyncExecutor(model, executor.Plan("1f1b", plan.stages, 2, 1), None, loss_name="ce_mem",
                                     num_classes=10, encode_fn=None, binary_input=True, batch_size=8, num_steps=2,
                                     input_shape=(8, 8, 1), devices=[Dev(0, 0)])
    with pytest.raises(ValueError, match="runs pipeline.execute='1f1b' or 'gpipe', got 'spikepipe'"):
        async_executor.AsyncExecutor(model, executor.Plan("spikepipe", plan.stages, 1, 1), None, loss_name="ce_mem",
                                     num_classes=10, encode_fn=None, binary_input=True, batch_size=8, num_steps=2,
                                     input_shape=(8, 8, 1))
    assert stages_lib.stage_map(plan.stages) == [0] * model.num_layers


@pytest.mark.parametrize("net,num_stages,save_at", [("deep_digits", 4, 5), ("conv_digits", 3, 2)])
def test_save_and_restore_mid_run_and_after_the_drain(tmp_path, net, num_stages, save_at):
    """A state saved mid-pipeline (kept vjps, labels, the messages of the next tick) and restored
    into a new executor continues bit for bit; saving after the drain works too. All stages on
    this process's one device (each its own programs)."""
    import jax

    from spikepipe_jax.train import optimizer as optimizer_lib

    cfg = experiments.load_config(net, "smoke")
    cfg.pipeline.execute, cfg.pipeline.stages = "1f1b", num_stages
    cfg.train.batch_size = 8
    model = snn.model_from_config(cfg.model)._replace(native="off")
    plan = executor.make_plan(cfg, num_stages)
    t, b, steps = cfg.model.num_steps, 8, 8
    tx = optimizer_lib.make_base_optimizer(cfg.train, total_steps=steps)

    def make():
        return async_executor.AsyncExecutor(
            model, plan, tx, loss_name=cfg.train.loss, num_classes=10,
            encode_fn=lambda x, k: snn.encode(cfg.data.encoding, x, t, k), binary_input=True, batch_size=b,
            num_steps=t, input_shape=cfg.model.input_shape, devices=[jax.devices()[0]] * num_stages)

    params = snn.init_params(jax.random.key(0), model)
    rng = np.random.default_rng(3)
    xs = [rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32) for _ in range(steps)]
    ys = [rng.integers(0, 10, b).astype(np.int32) for _ in range(steps)]
    key = jax.random.key(4)

    def run(ax, st, start):
        for k in range(start, steps):
            st, _ = ax.step(st, xs[k], ys[k], key)
        return ax.drain(st)[0]

    ax = make()
    full = ax.params(run(ax, ax.init(params), 0))
    st = ax.init(params)
    for k in range(save_at):
        st, _ = ax.step(st, xs[k], ys[k], key)
    st = ax.save(str(tmp_path / "ck"), st)
    assert any(st.stages[s].stash for s in st.stages)  # mid-pipeline: vjps in flight
    ax2 = make()
    assert ax2.exists(str(tmp_path / "ck"))
    restored, path = ax2.restore_latest(str(tmp_path / "ck"), ax2.init(params), warn=pytest.fail)
    assert restored.step == save_at and path.endswith("process_0.msgpack")
    done = run(ax2, restored, save_at)
    resumed = ax2.params(done)
    for a, r in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, r)
    # a file of the earlier format (one array per message, keys without "@<device>") is refused by name
    import flax.serialization
    blob = checkpoint.load_msgpack(str(tmp_path / "ck" / "process_0.msgpack"))
    inboxes = [st["inbox"] for st in blob["stages"].values()]
    assert any(inboxes) and all("@" in k for ib in inboxes for k in ib)
    for st in blob["stages"].values():
        st["inbox"] = {k.split("@")[0]: v for k, v in st["inbox"].items()}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "process_0.msgpack").write_bytes(flax.serialization.msgpack_serialize(blob))
    with pytest.raises(ValueError, match="an earlier version's format"):
        ax2.restore_latest(str(tmp_path / "old"), ax2.init(params), warn=pytest.fail)
    ax2.save(str(tmp_path / "ck"), done)  # after the drain: nothing in flight
    again, _ = ax2.restore_latest(str(tmp_path / "ck"), ax2.init(params), warn=pytest.fail)
    assert again.step == steps and not any(again.stages[s].stash for s in again.stages)
    (tmp_path / "ck" / "process_0.msgpack").write_bytes(b"\x00garbage")  # damaged newest: the previous one
    warned = []
    prev, path = ax2.restore_latest(str(tmp_path / "ck"), ax2.init(params), warn=warned.append)
    assert prev.step == save_at and path.endswith(".prev.msgpack") and "corrupt" in warned[0]
