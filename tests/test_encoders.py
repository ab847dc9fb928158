"""Input encoders, mainly the hash-based rate code: determinism, distribution, independence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import snn
from spikepipe_jax.snn import encoders


def _fmix32_np(h):
    h = h.astype(np.uint64) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_hash_uniform_matches_numpy_reimplementation(key):
    shape = (3, 4, 5)
    u = np.asarray(encoders.hash_uniform(key, shape))
    k0, k1 = (int(v) for v in np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
    i = np.arange(np.prod(shape), dtype=np.uint64)
    h = _fmix32_np(_fmix32_np((i * 0x9E3779B9) & 0xFFFFFFFF ^ k0) ^ k1)
    expect = (h >> 8).astype(np.float64) * 2.0 ** -24
    assert u.dtype == np.float32 and u.shape == shape
    np.testing.assert_array_equal(u.reshape(-1).astype(np.float64), expect)


def test_hash_uniform_distribution_and_determinism(key):
    n = 200_000
    u = np.asarray(jax.jit(encoders.hash_uniform, static_argnums=1)(key, (n,)))
    np.testing.assert_array_equal(u, np.asarray(encoders.hash_uniform(key, (n,))))  # jit == eager
    assert u.min() >= 0.0 and u.max() < 1.0
    assert len(np.unique(u)) > 0.99 * n  # 24-bit resolution: very few repeats
    # Mean and variance of U[0, 1) within 6 standard errors.
    assert abs(u.mean() - 0.5) < 6 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 6 * np.sqrt(1 / 180 / n)
    # Chi-square over 64 bins (df = 63: mean 63, sd ~11).
    counts = np.bincount((u * 64).astype(int), minlength=64)
    chi2 = ((counts - n / 64) ** 2 / (n / 64)).sum()
    assert chi2 < 63 + 6 * np.sqrt(2 * 63), chi2
    # Neighbouring counters are uncorrelated.
    for lag in (1, 2, 784):
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) < 6 / np.sqrt(n), (lag, r)
    other = np.asarray(encoders.hash_uniform(jax.random.key(1), (n,)))
    assert abs(np.corrcoef(u, other)[0, 1]) < 6 / np.sqrt(n)
    assert (u != other).mean() > 0.99


def test_rate_spike_probability_equals_clipped_intensity(key):
    # One "image" whose pixels take probabilities p, including values outside [0, 1].
    p = jnp.asarray([-0.5, 0.0, 0.02, 0.25, 0.5, 0.9, 1.0, 1.7])
    t = 20_000
    spikes = np.asarray(snn.rate(key, p[None, :], t))  # [T, 1, 8]
    assert spikes.shape == (t, 1, 8) and spikes.dtype == np.float32
    assert set(np.unique(spikes)) <= {0.0, 1.0}
    rate = spikes.mean(axis=(0, 1))
    expect = np.clip(np.asarray(p), 0, 1)
    se = np.sqrt(expect * (1 - expect) / t)
    assert np.all(np.abs(rate - expect) <= 6 * se + 1e-12), (rate, expect)
    assert rate[0] == 0 and rate[1] == 0 and rate[-2] == 1 and rate[-1] == 1
    # Independent over time: the autocorrelation of a p = 0.5 train at lag 1 is ~0.
    s = spikes[:, 0, 4]
    assert abs(np.corrcoef(s[:-1], s[1:])[0, 1]) < 6 / np.sqrt(t)


def test_rate_is_deterministic_and_keyed(key):
    x = jax.random.uniform(jax.random.key(7), (4, 5, 5, 1))
    a = snn.encode("rate", x, 6, key)
    b = jax.jit(lambda k, xx: snn.encode("rate", xx, 6, k))(key, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = snn.encode("rate", x, 6, jax.random.fold_in(key, 1))
    assert a.shape == (6, 4, 5, 5, 1) and float(jnp.mean(a != c)) > 0.2
    # The threefry path keeps jax.random's draws.
    old = snn.rate(key, x, 6, rng="threefry")
    expect = (jax.random.uniform(key, (6, *x.shape)) < jnp.clip(x, 0, 1)).astype(x.dtype)
    np.testing.assert_array_equal(np.asarray(old), np.asarray(expect))


def test_rate_bad_arguments(key):
    with pytest.raises(ValueError, match="'philox'"):
        snn.rate(key, jnp.ones((2, 3)), 4, rng="philox")
    with pytest.raises(ValueError, match="2\\*\\*32"):
        encoders.hash_uniform(key, (2 ** 16, 2 ** 16))
    with pytest.raises(ValueError, match="PRNG key"):
        snn.encode("rate", jnp.ones((2, 3)), 4)
