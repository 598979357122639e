"""The seeded noise stream (docs/design.md §2) against the Random123 known answers and an independent
scalar pure-Python implementation of the spec."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hebm.prior import philox
from hebm.prior.philox import philox4x32, philox_noise, philox_normal, seed_to_key
from hebm.prior.philox import initial_noise

M32 = 0xFFFFFFFF

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, expected output)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


# ----------------------------------------------------------------------- scalar reference
def py_philox(ctr, key, rounds=10):
    """Philox4x32 on Python ints, written from the Random123 paper (not from hebm)."""
    c = list(ctr)
    k0, k1 = key
    for r in range(rounds):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        hi0, lo0 = p0 >> 32, p0 & M32
        hi1, lo1 = p1 >> 32, p1 & M32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + 0x9E3779B9) & M32
        k1 = (k1 + 0xBB67AE85) & M32
    return tuple(c)


def py_normals(seed, chain, step, D, stream=0):
    """docs/design.md §2, element by element, in float64 (Python's math module, i.e. the C
    library's double log/cos/sin — not torch's); the spec rounds each normal once to float32."""
    key = (seed % 2**32, (seed // 2**32) % 2**32)
    out = []
    for j in range((D + 3) // 4):
        x = py_philox((j, chain, step, stream), key)
        u = [((xi >> 9) + 0.5) * 2.0**-23 for xi in x]
        r1 = math.sqrt(-2 * math.log(u[0]))
        r2 = math.sqrt(-2 * math.log(u[2]))
        out += [r1 * math.cos(2 * math.pi * u[1]), r1 * math.sin(2 * math.pi * u[1]),
                r2 * math.cos(2 * math.pi * u[3]), r2 * math.sin(2 * math.pi * u[3])]
    return out[:D]


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance in float32 ulps between two float32 tensors of one sign pattern."""
    assert torch.equal(a.sign(), b.sign())
    return int((a.view(torch.int32).long() - b.view(torch.int32).long()).abs().max())


# ----------------------------------------------------------------------- tests
@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answer_vectors(ctr, key, expected):
    assert py_philox(ctr, key) == expected  # the scalar reference itself is right
    got = tuple(int(x) for x in philox4x32(ctr, key))
    assert got == expected, [hex(g) for g in got]


def test_known_answers_vectorised():
    """The same vectors through the tensor (broadcasting) path, counters as [3] tensors."""
    for (ctr, key, expected) in KAT:
        cc = [torch.full((3,), v, dtype=torch.int64) for v in ctr]
        out = philox4x32(cc, key)
        for o, e in zip(out, expected):
            assert o.tolist() == [e] * 3


def test_random_counters_match_scalar_reference():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(64, 4), dtype=np.uint64)
    key = (int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
    out = philox4x32(tuple(torch.tensor(ctr[:, i].astype(np.int64)) for i in range(4)), key)
    for n in range(64):
        assert tuple(int(o[n]) for o in out) == py_philox(tuple(int(v) for v in ctr[n]), key)


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1, 2**32, 2**32 + 5, 123456789012345, 2**64 - 1])
@pytest.mark.parametrize("D", [1, 3, 4, 7, 13])
def test_normals_match_spec(seed, D):
    chains = [0, 1, 5, 2**32 - 1]
    got = philox_normal(seed, torch.tensor(chains), 3, D)
    assert got.shape == (len(chains), D) and got.dtype == torch.float32
    want = torch.tensor([py_normals(seed, c, 3, D) for c in chains], dtype=torch.float64).float()
    assert ulp_distance(got, want) <= 1


def test_element_order_and_streams():
    """Elements 4j..4j+3 come from counter (j, c, k, s); stream 1 and other steps differ."""
    D = 10
    got = philox_normal(99, torch.tensor([4]), 2, D, stream=1)[0]
    assert ulp_distance(got, torch.tensor(py_normals(99, 4, 2, D, stream=1), dtype=torch.float64).float()) <= 1
    base = philox_normal(99, torch.tensor([4]), 2, D)[0]
    assert not torch.equal(base, got)
    assert not torch.equal(base, philox_normal(99, torch.tensor([4]), 3, D)[0])
    # a longer D only appends elements: elements < D do not depend on D
    long = philox_normal(99, torch.tensor([4]), 2, 23)[0]
    assert torch.equal(long[:D], base)


def test_uniforms_exact_and_open_interval():
    x = torch.tensor([0, 511, 512, M32, 2**31], dtype=torch.int64)
    u = philox.uniform_from_bits(x)
    want = [0.5 * 2**-23, 0.5 * 2**-23, 1.5 * 2**-23, 1 - 0.5 * 2**-23, 0.5 + 0.5 * 2**-23]
    assert u.dtype == torch.float32
    assert u.double().tolist() == want  # exact in fp32
    assert bool((u > 0).all()) and bool((u < 1).all())


def test_seed_key_split():
    assert seed_to_key(0) == (0, 0)
    assert seed_to_key(5) == (5, 0)
    assert seed_to_key(2**32) == (0, 1)
    assert seed_to_key(3 * 2**32 + 17) == (17, 3)
    assert seed_to_key(2**64 - 1) == (M32, M32)
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            seed_to_key(bad)
    # seeds differing only in the high word give different streams
    a = philox_normal(17, torch.arange(3), 0, 8)
    b = philox_normal(17 + 2**32, torch.arange(3), 0, 8)
    assert not torch.equal(a, b)


def test_batch_independence():
    """A chain's noise is the same alone or inside a batch of 100 (through chain_ids)."""
    ids = torch.randperm(100, generator=torch.Generator().manual_seed(0)) + 1000
    big = philox_noise(42, ids, 4, 11, step_offset=2)
    for b in (0, 37, 99):
        alone = philox_noise(42, ids[b : b + 1], 4, 11, step_offset=2)
        assert torch.equal(alone[:, 0], big[:, b])
    # step_offset shifts the step counter
    assert torch.equal(philox_noise(42, ids, 2, 11, step_offset=3)[0], big[1])


def test_initial_noise_is_stream_one():
    got = initial_noise(5, 3, 6, chain_ids=torch.tensor([8, 9, 10]), dtype=torch.float64)
    want = torch.tensor([py_normals(5, c, 0, 6, stream=1) for c in (8, 9, 10)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def test_normal_statistics():
    """Mean, variance, KS distance to N(0, 1), and no correlation between neighbouring elements."""
    x = philox_noise(2024, torch.arange(500), 4, 50).double().reshape(-1)  # 100,000 normals
    n = x.numel()
    assert abs(float(x.mean())) < 4 / math.sqrt(n)
    assert abs(float(x.var()) - 1) < 4 * math.sqrt(2 / n)
    xs = np.sort(x.numpy())
    cdf = 0.5 * (1 + np.vectorize(math.erf)(xs / math.sqrt(2)))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)  # 1% critical value of the Kolmogorov distribution
    # the four elements of a block (cos/sin pairs) are uncorrelated
    blocks = philox_noise(2024, torch.arange(2000), 1, 4).double().reshape(-1, 4)
    corr = torch.corrcoef(blocks.T)
    off = corr - torch.eye(4, dtype=torch.float64)
    assert float(off.abs().max()) < 4 / math.sqrt(blocks.shape[0])
    # fourth moment of a normal is 3
    assert abs(float((x**4).mean()) - 3) < 5 * math.sqrt(96 / n)
