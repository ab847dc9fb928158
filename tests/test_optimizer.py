"""The base optimiser from config.train: learning-rate schedules and warm-up."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from spikepipe_jax.train import optimizer as optimizer_lib


def _lrs(steps, **train):
    """Learning rate of each step, read as the update of plain SGD on a gradient of ones."""
    cfg = ml_collections.ConfigDict(dict(dict(optimizer="sgd", learning_rate=1e-3, lr_schedule="constant",
                                              warmup_steps=0), **train))
    tx = optimizer_lib.make_base_optimizer(cfg, total_steps=steps)
    state = tx.init(jnp.zeros(1))
    out = []
    for _ in range(steps):
        u, state = tx.update(jnp.ones(1), state)
        out.append(-float(u[0]))
    return np.array(out)


def test_constant_without_warmup():
    np.testing.assert_allclose(_lrs(5), 1e-3, rtol=1e-6)


def test_linear_warmup_then_constant():
    lrs = _lrs(12, warmup_steps=4)
    np.testing.assert_allclose(lrs[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-5)
    np.testing.assert_allclose(lrs[4:], 1e-3, rtol=1e-6)


def test_warmup_then_cosine_decays_over_the_remaining_steps():
    lrs = _lrs(110, warmup_steps=10, lr_schedule="cosine")
    assert lrs[0] == pytest.approx(1e-4, rel=1e-5)
    assert lrs[10] == pytest.approx(1e-3, rel=1e-5)  # the cosine starts after the warm-up
    assert np.all(np.diff(lrs[10:]) <= 1e-12)
    assert lrs[-1] == pytest.approx(5e-5, rel=1e-2)  # about alpha = 5 % at the end of the run


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_bad_warmup_is_rejected_by_name(bad):
    with pytest.raises(ValueError, match="warmup_steps"):
        _lrs(2, warmup_steps=bad)
