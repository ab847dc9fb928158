"""Generates tests/data/snntorch_leaky_ref.npz with snnTorch 1.0 itself (not run by the tests).

    python -m venv /tmp/snnvenv && /tmp/snnvenv/bin/pip install torch==2.13.0 snntorch==1.0.0 numpy
    /tmp/snnvenv/bin/python tests/data/make_snntorch_ref.py

For each reset mechanism x (scalar, per-neuron) beta x surrogate (atan, fast_sigmoid), random
currents [T, B, N] run through ``snn.Leaky`` step by step; stores spikes, membranes and the
gradient w.r.t. the currents of  L = sum(spk * g_spk) + sum(mem * g_mem)  (random g's).
"""
import pathlib

import numpy as np
import snntorch as snn
import torch
from snntorch import surrogate

T, B, N = 16, 3, 7
rng = np.random.default_rng(1234)
out = {"T": T, "B": B, "N": N}
currents = rng.normal(0.4, 0.8, (T, B, N)).astype(np.float32)
g_spk = rng.normal(size=(T, B, N)).astype(np.float32)
g_mem = rng.normal(size=(T, B, N)).astype(np.float32)
beta_vec = rng.uniform(0.5, 0.99, N).astype(np.float32)
out.update(currents=currents, g_spk=g_spk, g_mem=g_mem, beta_vec=beta_vec)
for reset in ("subtract", "zero", "none"):
    for beta_kind in ("scalar", "vector"):
        for sname, sfn in (("atan", surrogate.atan(alpha=2.0)), ("fast_sigmoid", surrogate.fast_sigmoid(slope=25))):
            beta = 0.85 if beta_kind == "scalar" else torch.tensor(beta_vec)
            lif = snn.Leaky(beta=beta, threshold=1.0, reset_mechanism=reset, spike_grad=sfn)
            cur = torch.tensor(currents, requires_grad=True)
            mem = lif.init_leaky()
            spks, mems = [], []
            for t in range(T):
                spk, mem = lif(cur[t], mem)
                spks.append(spk)
                mems.append(mem)
            spk = torch.stack(spks)
            mem = torch.stack(mems)
            loss = (spk * torch.tensor(g_spk)).sum() + (mem * torch.tensor(g_mem)).sum()
            loss.backward()
            key = f"{reset}_{beta_kind}_{sname}"
            out[f"{key}_spk"] = spk.detach().numpy()
            out[f"{key}_mem"] = mem.detach().numpy()
            out[f"{key}_grad"] = cur.grad.numpy()
path = pathlib.Path(__file__).with_name("snntorch_leaky_ref.npz")
np.savez_compressed(path, **out)
print("wrote", path, "snntorch", snn.__version__, "torch", torch.__version__)
