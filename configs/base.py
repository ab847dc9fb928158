"""Shared defaults for every network config (derive, don't duplicate).

Each ``configs/<net>.py`` calls :func:`make_config` with its layer spec and overrides a few
fields. Field reference (units in names where they have one):

* ``seed``                       PRNG seed for init, data order, encoders.
* ``data.name``                  ``digits`` (embedded) | ``mnist`` | ``fashion_mnist`` | ``cifar10`` | ``nmnist``.
* ``data.dir``                   folder with the dataset's files (not used for ``digits``).
* ``data.encoding``              ``rate`` (Bernoulli) | ``direct`` (constant current) | ``latency``.
* ``model.layers``               network spec (see ``spikepipe_jax/spec.py``).
* ``model.input_shape``          per-sample input shape ``(H, W, C)``.
* ``model.num_steps``            T, simulation time steps.
* ``model.beta / threshold / reset / learn_beta``   LIF parameters (snnTorch ``Leaky``).
* ``model.surrogate / surrogate_scale``  ``fast_sigmoid`` (slope) | ``arctan`` (alpha) | ``triangle``.
* ``model.readout``              ``count`` (spiking output, spike counts) | ``membrane`` (non-spiking output).
* ``model.remat``                ``jax.checkpoint`` the time-loop body (memory for long T); im2col convs
                                 also gather their patches over image chunks in the backward pass.
* ``model.conv_impl``            conv layers: ``auto`` (im2col on CPU, XLA conv elsewhere) | ``xla`` | ``im2col``.
* ``model.native``               native XLA:CPU kernels (last hidden LIF layer + dense readout fused;
                                 im2col conv input-gradient fold): ``auto`` (single CPU device,
                                 kernels built) | ``on`` (error if they cannot run) | ``off``.
* ``train.*``                    batch size, epochs, optimiser, learning rate, loss, logging.
* ``train.warmup_steps``         linear warm-up: step k < w uses lr * (k + 1) / w, then ``lr_schedule``.
* ``train.cpu_gemm``             XLA:CPU's library for the steps' GEMMs: ``eigen`` (all dots; YNNPACK keeps
                                 the reductions) | ``xla_default`` (XLA's choice: YNNPACK for most dots).
* ``pipeline.delays``            ``none`` | ``1f1b`` | ``fully_pipelined`` | list of ints (one per weight layer);
                                 the named ones are derived for ``pipeline.stages``.
* ``pipeline.delay_position``    ``before`` (stale gradient into the optimiser) | ``after``.
* ``pipeline.mitigation``        ``none`` | mitigation name (see ``spikepipe_jax/train/mitigation.py``).
* ``pipeline.simulate``          ``none`` (buffer model) | ``stash`` | ``no_stash`` (``train/pipesim.py``).
* ``pipeline.execute``           ``none`` | ``gpipe`` | ``1f1b``: layers as stages on devices
                                 (``train/async_executor.py``); ``pipeline.stages`` S (0: one per weight layer)
                                 devices per pipeline (the other devices data-parallel), balanced by the
                                 cost model; ``pipeline.microbatches`` M (GPipe); ``spikepipe``: the
                                 SpikePipe schedule task by task (``train/task_executor.py``), its bytes
                                 per iteration at most ``pipeline.comm_budget`` x 1F1B's (0: no limit).
* ``hardware.*``                 systolic array and vector-unit parameters for the cost model.
"""

import ml_collections


def make_config(*, layers, input_shape, num_steps, dataset="digits", encoding="rate",
                batch_size=64, epochs=10, learning_rate=2e-3, optimizer="adam",
                loss="ce_count", readout="count", beta=0.9, smoke=False):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.smoke = smoke

    c.data = ml_collections.ConfigDict()
    c.data.name = dataset
    c.data.dir = ""
    c.data.encoding = encoding
    c.data.max_train = 0  # 0 = all; >0 truncates the training set (smoke runs)
    c.data.max_test = 0

    c.model = ml_collections.ConfigDict()
    c.model.layers = [dict(l) for l in layers]
    c.model.input_shape = tuple(input_shape)
    c.model.num_steps = num_steps
    c.model.beta = beta
    c.model.learn_beta = False
    c.model.threshold = 1.0
    c.model.reset = "subtract"
    c.model.surrogate = "fast_sigmoid"
    c.model.surrogate_scale = 25.0
    c.model.readout = readout
    c.model.remat = False
    c.model.conv_impl = "auto"  # "xla" (lax.conv) | "im2col" (patches + GEMM; fastest on CPU) | "auto"
    c.model.native = "auto"  # "on" | "off": native kernels (spikepipe_jax/native, snn/fused.py)
    c.model.init_gain = 1.0  # weight/bias init bound = init_gain / sqrt(fan_in) (PyTorch default at 1)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = batch_size
    c.train.epochs = epochs
    c.train.optimizer = optimizer
    c.train.learning_rate = learning_rate
    c.train.lr_schedule = "constant"  # or "cosine" (decays to 5 % over the run)
    c.train.warmup_steps = 0  # linear learning-rate warm-up over the first steps (0 = none)
    c.train.weight_decay = 0.0
    c.train.loss = loss
    c.train.log_every_steps = 50
    c.train.eval_batch_size = 256
    c.train.checkpoint_every_steps = 200
    c.train.cpu_gemm = "eigen"  # "xla_default": XLA's own pick (YNNPACK); see train/loop.compiler_options

    c.pipeline = ml_collections.ConfigDict()
    c.pipeline.delays = "none"
    c.pipeline.delay_scale = 1
    c.pipeline.delay_position = "before"
    c.pipeline.mitigation = "none"
    c.pipeline.simulate = "none"  # "stash" | "no_stash": faithful per-layer-version pipeline simulator
    c.pipeline.execute = "none"  # "gpipe" | "1f1b": run the layers as stages on devices (train/async_executor.py)
    c.pipeline.stages = 0  # S: 0 = one stage per weight layer; devices on the mesh's "stage" axis
    c.pipeline.microbatches = 1  # GPipe's micro-batches per batch
    # spikepipe: the most bytes per iteration its schedule may move between processors, as a multiple of
    # standard pipelining's (1F1B's contiguous stages); 0: no limit (the cost model's ideal links)
    c.pipeline.comm_budget = 0.0

    c.hardware = ml_collections.ConfigDict()
    c.hardware.rows = 128
    c.hardware.cols = 128
    c.hardware.dataflow = "ws"
    c.hardware.spike_bits = 1
    c.hardware.float_bits = 32
    c.hardware.vector_lanes = 0  # 0 = one lane per array column (C lanes)
    return c


def is_smoke(arg: str) -> bool:
    return "smoke" in (arg or "").split(",")


def apply_smoke(c):
    """Tiny T, batch and steps, for tests and notebooks."""
    c.smoke = True
    c.model.num_steps = min(c.model.num_steps, 4)
    c.train.batch_size = 16
    c.train.epochs = 1
    c.train.eval_batch_size = 64
    c.train.log_every_steps = 5
    c.data.max_train = 64
    c.data.max_test = 64
    return c
