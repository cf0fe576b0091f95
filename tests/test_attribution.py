"""Tests for esper_func.attribution: grids, Shapley, Banzhaf, interactions.

Reference values come from brute-force formulas written here independently
(itertools over permutations and subsets, Python floats).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st

from esper_func.attribution import (
    DEFAULT_SHAPLEY_SAMPLES,
    STRATEGIES,
    CoalitionValues,
    InteractionResult,
    ShapleyResult,
    alpha_grid,
    banzhaf,
    coalition_masks,
    interactions,
    shapley,
    shapley_permutations,
    values_by_coalition,
)
from esper_func.errors import DTypeError, ShapeError

# --------------------------------------------------------------------------
# Independent brute-force references (a game is a dict frozenset -> float)
# --------------------------------------------------------------------------


def subsets(players):
    players = list(players)
    for r in range(len(players) + 1):
        yield from (frozenset(c) for c in itertools.combinations(players, r))


def game_from_list(n: int, vals: list[float]) -> dict[frozenset, float]:
    """Coalition whose members are the set bits of k gets vals[k]."""
    return {frozenset(j for j in range(n) if (k >> j) & 1): vals[k] for k in range(1 << n)}


def game_tensor(n: int, game: dict[frozenset, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A full factorial grid (built here, not by the library) and its values."""
    rows = [[float((k >> j) & 1) for j in range(n)] for k in range(1 << n)]
    vals = [game[frozenset(j for j in range(n) if (k >> j) & 1)] for k in range(1 << n)]
    return torch.tensor(rows), torch.tensor(vals, dtype=torch.float64)


def brute_shapley(n: int, game) -> list[float]:
    phi = [0.0] * n
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        before: frozenset = frozenset()
        for i in perm:
            phi[i] += game[before | {i}] - game[before]
            before = before | {i}
    return [p / len(perms) for p in phi]


def brute_banzhaf(n: int, game) -> list[float]:
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        out.append(sum(game[s | {i}] - game[s] for s in subsets(others)) / 2 ** (n - 1))
    return out


def brute_shapley_interaction(n: int, game) -> list[list[float]]:
    out = [[0.0] * n for _ in range(n)]
    for i, j in itertools.permutations(range(n), 2):
        others = [k for k in range(n) if k not in (i, j)]
        total = 0.0
        for s in subsets(others):
            w = math.factorial(len(s)) * math.factorial(n - len(s) - 2) / math.factorial(n - 1)
            total += w * (game[s | {i, j}] - game[s | {i}] - game[s | {j}] + game[s])
        out[i][j] = total
    return out


def brute_pairwise(n: int, game) -> list[list[float]]:
    e = frozenset()
    return [
        [
            0.0
            if i == j
            else game[frozenset({i, j})] - game[frozenset({i})] - game[frozenset({j})] + game[e]
            for j in range(n)
        ]
        for i in range(n)
    ]


def additive_game(n: int, weights: list[float], const: float = 0.0):
    return {s: const + sum(weights[j] for j in s) for s in subsets(range(n))}


@st.composite
def games(draw, min_n: int = 1, max_n: int = 5):
    n = draw(st.integers(min_n, max_n))
    vals = draw(
        st.lists(
            st.floats(-100, 100, allow_nan=False, allow_infinity=False),
            min_size=1 << n,
            max_size=1 << n,
        )
    )
    return n, game_from_list(n, vals)


def close(actual: torch.Tensor, expected, atol: float = 1e-9) -> None:
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=1e-9
    )


# --------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_full_factorial_rows_and_order(n: int) -> None:
    grid = alpha_grid("full_factorial", n)
    assert grid.dtype == torch.float32 and grid.shape == (1 << n, n)
    expected = [[float((k >> j) & 1) for j in range(n)] for k in range(1 << n)]
    assert grid.tolist() == expected
    assert grid[0].sum() == 0 and grid[-1].sum() == n
    assert torch.unique(grid, dim=0).shape[0] == 1 << n
    assert torch.equal(coalition_masks(grid), torch.arange(1 << n))


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_ablation_rows(n: int) -> None:
    grid = alpha_grid("ablation", n)
    assert grid.dtype == torch.float32 and grid.shape == (n + 2, n)
    assert grid[0].tolist() == [1.0] * n
    for i in range(n):
        assert grid[1 + i].tolist() == [0.0 if j == i else 1.0 for j in range(n)]
    assert grid[-1].tolist() == [0.0] * n


def _prefix_rows(perm: list[int], n: int) -> list[tuple[float, ...]]:
    return [tuple(1.0 if j in perm[:k] else 0.0 for j in range(n)) for k in range(n + 1)]


@pytest.mark.parametrize(("n", "samples"), [(1, 2), (2, 4), (3, 6), (6, 20), (9, 40)])
def test_shapley_grid_structure(n: int, samples: int) -> None:
    grid, perms = alpha_grid("shapley", n, seed=3, samples=samples, return_permutations=True)
    assert grid.dtype == torch.float32 and perms.dtype == torch.int64
    assert perms.shape == (samples, n)
    rows = [tuple(r) for r in grid.tolist()]
    assert len(set(rows)) == len(rows), "no duplicate rows"
    # the distinct ablation rows come first, in ablation order
    ablation = list(dict.fromkeys(tuple(r) for r in alpha_grid("ablation", n).tolist()))
    assert rows[: len(ablation)] == ablation
    # orders are permutations in antithetic pairs; every prefix is a row
    for p in range(samples):
        assert sorted(perms[p].tolist()) == list(range(n))
    assert torch.equal(perms[1::2], perms[0::2].flip(1))
    present = set(rows)
    for perm in perms.tolist():
        assert set(_prefix_rows(perm, n)) <= present
    # rows beyond the ablation ones are exactly the prefixes, in first-seen order
    expected = list(ablation)
    for perm in perms.tolist():
        for r in _prefix_rows(perm, n):
            if r not in expected:
                expected.append(r)
    assert rows == expected


def test_shapley_grid_default_samples_and_reproducibility() -> None:
    assert DEFAULT_SHAPLEY_SAMPLES == 20
    grid, perms = alpha_grid("shapley", 8, return_permutations=True)
    assert perms.shape == (20, 8)
    assert torch.equal(grid, alpha_grid("shapley", 8))  # seed None is fixed
    assert torch.equal(alpha_grid("shapley", 8, seed=5), alpha_grid("shapley", 8, seed=5))
    assert not torch.equal(
        shapley_permutations(8, seed=5), shapley_permutations(8, seed=6)
    )
    a, b = alpha_grid("shapley", 8, seed=5), alpha_grid("shapley", 8, seed=6)
    assert a.shape != b.shape or not torch.equal(a, b)
    assert torch.equal(
        alpha_grid("shapley", 8, seed=5, return_permutations=True)[1],
        shapley_permutations(8, seed=5),
    )


def test_grid_rng_discipline() -> None:
    global_state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(123)
    gen_state = gen.get_state()
    first = alpha_grid("shapley", 7, seed=gen)
    second = alpha_grid("shapley", 7, seed=gen)
    assert torch.equal(first, second)  # the generator is read, not advanced
    assert torch.equal(gen.get_state(), gen_state)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first, alpha_grid("shapley", 7, seed=torch.Generator().manual_seed(123)))


def test_grid_bad_input() -> None:
    valid = "'full_factorial'.*'ablation'.*'shapley'"
    with pytest.raises(ValueError, match=f"unknown grid strategy 'random'.*{valid}"):
        alpha_grid("random", 3)
    assert set(STRATEGIES) == {"full_factorial", "ablation", "shapley"}
    for strategy in STRATEGIES:
        with pytest.raises(ValueError, match="n must be >= 1"):
            alpha_grid(strategy, 0)
        with pytest.raises(TypeError, match="n must be an int"):
            alpha_grid(strategy, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n <= 20.*'shapley'"):
        alpha_grid("full_factorial", 21)
    with pytest.raises(ValueError, match="even and >= 2"):
        alpha_grid("shapley", 4, samples=3)
    with pytest.raises(ValueError, match="even and >= 2"):
        alpha_grid("shapley", 4, samples=0)
    with pytest.raises(TypeError, match="samples must be an int"):
        alpha_grid("shapley", 4, samples=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples only applies"):
        alpha_grid("ablation", 4, samples=4)
    with pytest.raises(ValueError, match="return_permutations only applies"):
        alpha_grid("full_factorial", 4, return_permutations=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="seed must be"):
        alpha_grid("shapley", 4, seed="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be in"):
        alpha_grid("shapley", 4, seed=-1)


# --------------------------------------------------------------------------
# Exact Shapley: axioms and brute force
# --------------------------------------------------------------------------


@given(games(max_n=5))
def test_exact_shapley_matches_brute_force(case) -> None:
    n, game = case
    grid, values = game_tensor(n, game)
    result = shapley(grid, values)
    assert result.method == "exact" and result.n_samples == 0
    close(result.mean, brute_shapley(n, game), atol=1e-8)
    assert torch.equal(result.std, torch.zeros(n, dtype=torch.float64))


def test_exact_shapley_n6_brute_force() -> None:
    n = 6
    gen = torch.Generator().manual_seed(0)
    game = game_from_list(n, torch.randn(1 << n, generator=gen, dtype=torch.float64).tolist())
    grid, values = game_tensor(n, game)
    close(shapley(grid, values).mean, brute_shapley(n, game), atol=1e-10)


@given(games(max_n=6))
def test_shapley_efficiency(case) -> None:
    n, game = case
    grid, values = game_tensor(n, game)
    total = shapley(grid, values).mean.sum().item()
    assert total == pytest.approx(game[frozenset(range(n))] - game[frozenset()], abs=1e-8)


@given(games(min_n=2, max_n=5), st.data())
def test_shapley_symmetry(case, data) -> None:
    n, base = case
    i, j = data.draw(st.sampled_from(list(itertools.combinations(range(n), 2))))

    def swap(s):
        return frozenset({i: j, j: i}.get(k, k) for k in s)

    game = {s: base[s] + base[swap(s)] for s in base}  # invariant under i <-> j
    mean = shapley(*game_tensor(n, game)).mean
    assert mean[i].item() == pytest.approx(mean[j].item(), abs=1e-8)


@given(games(min_n=1, max_n=4), st.data())
def test_shapley_dummy(case, data) -> None:
    n_base, base = case
    n = n_base + 1
    dummy = data.draw(st.integers(0, n - 1))

    def project(s):  # drop the dummy, renumber the rest into base's players
        return frozenset(k if k < dummy else k - 1 for k in s if k != dummy)

    game = {s: base[project(s)] for s in subsets(range(n))}
    mean = shapley(*game_tensor(n, game)).mean
    assert mean[dummy].item() == pytest.approx(0.0, abs=1e-9)
    assert banzhaf(*game_tensor(n, game))[dummy].item() == pytest.approx(0.0, abs=1e-9)


@given(st.integers(1, 5), st.data())
def test_shapley_additivity(n, data) -> None:
    floats = st.floats(-100, 100, allow_nan=False)
    v = game_from_list(n, data.draw(st.lists(floats, min_size=1 << n, max_size=1 << n)))
    w = game_from_list(n, data.draw(st.lists(floats, min_size=1 << n, max_size=1 << n)))
    grid, tv = game_tensor(n, v)
    _, tw = game_tensor(n, w)
    torch.testing.assert_close(
        shapley(grid, tv + tw).mean, shapley(grid, tv).mean + shapley(grid, tw).mean
    )


# --------------------------------------------------------------------------
# Sampled Shapley
# --------------------------------------------------------------------------


def _random_game(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return game_from_list(n, torch.randn(1 << n, generator=gen, dtype=torch.float64).tolist())


def _values_for(grid: torch.Tensor, game, n: int) -> torch.Tensor:
    return torch.tensor(
        [game[frozenset(j for j in range(n) if row[j])] for row in grid.tolist()],
        dtype=torch.float64,
    )


def test_sampled_shapley_with_all_permutations_is_exact() -> None:
    n = 4
    game = _random_game(n, 1)
    grid, values = game_tensor(n, game)
    exact = brute_shapley(n, game)
    every = torch.tensor(list(itertools.permutations(range(n))))
    unpaired = shapley(grid, values, permutations=every)
    assert unpaired.method == "permutation" and unpaired.n_samples == math.factorial(n)
    close(unpaired.mean, exact, atol=1e-10)
    firsts = [p for p in itertools.permutations(range(n)) if p[0] < p[-1]]
    paired = torch.tensor([q for p in firsts for q in (p, p[::-1])])
    result = shapley(grid, values, permutations=paired)
    assert result.method == "antithetic"
    close(result.mean, exact, atol=1e-10)


@given(st.integers(1, 7), st.integers(0, 2**32 - 1), st.sampled_from([2, 4, 10]))
def test_sampled_shapley_exact_on_additive_games(n, seed, samples) -> None:
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(n, generator=gen, dtype=torch.float64).tolist()
    game = additive_game(n, weights, const=0.5)
    grid, perms = alpha_grid("shapley", n, seed=seed, samples=samples, return_permutations=True)
    result = shapley(grid, _values_for(grid, game, n), permutations=perms)
    close(result.mean, weights, atol=1e-12)
    if samples >= 4:
        assert float(result.std.abs().max()) <= 1e-12
    else:
        assert bool(torch.isnan(result.std).all())  # one pair: the error is unknown


@given(st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_sampled_shapley_is_efficient(n, seed) -> None:
    game = _random_game(n, seed)
    grid, perms = alpha_grid("shapley", n, seed=seed, samples=6, return_permutations=True)
    mean = shapley(grid, _values_for(grid, game, n), permutations=perms).mean
    assert mean.sum().item() == pytest.approx(
        game[frozenset(range(n))] - game[frozenset()], abs=1e-10
    )


def test_sampled_shapley_error_shrinks_and_std_positive() -> None:
    n = 6
    errors = {}
    for samples in (4, 64, 1024):
        errs = []
        for seed in range(5):
            game = _random_game(n, 100 + seed)
            exact = torch.tensor(brute_shapley(n, game), dtype=torch.float64)
            grid, perms = alpha_grid(
                "shapley", n, seed=seed, samples=samples, return_permutations=True
            )
            result = shapley(grid, _values_for(grid, game, n), permutations=perms)
            assert result.method == "antithetic" and result.n_samples == samples
            if samples >= 64:  # with 2 pairs a player can see identical marginals
                assert bool((result.std > 0).all())
            errs.append(float((result.mean - exact).abs().mean()))
        errors[samples] = sum(errs) / len(errs)
    assert errors[1024] < errors[64] < errors[4]
    assert errors[1024] < 0.25 * errors[4]


def test_sampled_standard_error_is_calibrated() -> None:
    # With 1024 permutations the estimate lies within ~4 standard errors.
    n = 5
    game = _random_game(n, 7)
    exact = torch.tensor(brute_shapley(n, game), dtype=torch.float64)
    grid, perms = alpha_grid("shapley", n, seed=1, samples=1024, return_permutations=True)
    result = shapley(grid, _values_for(grid, game, n), permutations=perms)
    assert bool(((result.mean - exact).abs() <= 4 * result.std).all())


def test_unpaired_permutations_use_per_order_standard_error() -> None:
    n = 4
    game = _random_game(n, 2)
    grid, values = game_tensor(n, game)
    perms = torch.tensor([[0, 1, 2, 3], [2, 0, 3, 1], [1, 3, 0, 2]])
    result = shapley(grid, values, permutations=perms)
    per_order = []
    for perm in perms.tolist():
        phi = [0.0] * n
        before: frozenset = frozenset()
        for i in perm:
            phi[i] = game[before | {i}] - game[before]
            before = before | {i}
        per_order.append(phi)
    ref = torch.tensor(per_order, dtype=torch.float64)
    assert result.method == "permutation"
    torch.testing.assert_close(result.mean, ref.mean(0))
    torch.testing.assert_close(result.std, ref.std(0) / math.sqrt(3))


def test_shapley_reads_the_sampled_orders_off_a_shapley_grid() -> None:
    n = 8
    grid, perms = alpha_grid("shapley", n, seed=0, return_permutations=True)
    weights = torch.randn(n, generator=torch.Generator().manual_seed(0))
    additive = grid.double() @ weights.double()
    inferred = shapley(grid, additive)
    assert inferred.method == "permutation" and inferred.n_samples >= perms.shape[0]
    close(inferred.mean, weights.double().tolist(), atol=1e-9)  # exact on additive games
    game = additive + torch.randn(grid.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inferred, paired = shapley(grid, game), shapley(grid, game, permutations=perms)
    full = int(torch.nonzero(grid.bool().all(dim=1))[0])
    empty = int(torch.nonzero(~grid.bool().any(dim=1))[0])
    close(inferred.mean.sum(), float(game[full] - game[empty]), atol=1e-9)  # efficiency, every order
    assert bool((inferred.std > 0).all()) and paired.method == "antithetic"


def test_shapley_needs_chains_full_factorial_or_permutations() -> None:
    grid = alpha_grid("shapley", 8, seed=0)
    values = torch.randn(grid.shape[0])
    without_full = grid[~grid.bool().all(dim=1)]
    with pytest.raises(ValueError, match=r"full coalition.*permutations="):
        shapley(without_full, values[: without_full.shape[0]])
    with pytest.raises(ValueError, match="no row for coalition"):
        shapley(grid, values, permutations=shapley_permutations(8, seed=1, samples=40))
    with pytest.raises(ValueError, match="permutation of range"):
        shapley(grid, values, permutations=torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]]))
    with pytest.raises(ShapeError, match=r"\[P, 8\]"):
        shapley(grid, values, permutations=torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(DTypeError, match="integer dtype"):
        shapley(grid, values, permutations=torch.zeros(2, 8))


def test_saturated_shapley_grid_gives_exact_values() -> None:
    # For few players the sampled prefixes often cover every coalition.
    n = 3
    grid = alpha_grid("shapley", n, seed=0)
    assert grid.shape[0] == 1 << n
    game = _random_game(n, 9)
    close(shapley(grid, _values_for(grid, game, n)).mean, brute_shapley(n, game), atol=1e-12)


# --------------------------------------------------------------------------
# Banzhaf and interactions
# --------------------------------------------------------------------------


@given(games(max_n=5))
def test_banzhaf_matches_brute_force(case) -> None:
    n, game = case
    close(banzhaf(*game_tensor(n, game)), brute_banzhaf(n, game), atol=1e-8)


@given(games(min_n=1, max_n=5))
def test_interactions_match_brute_force(case) -> None:
    n, game = case
    result = interactions(*game_tensor(n, game))
    assert isinstance(result, InteractionResult)
    close(result.pairwise, brute_pairwise(n, game), atol=1e-8)
    assert result.shapley_interaction is not None
    close(result.shapley_interaction, brute_shapley_interaction(n, game), atol=1e-8)
    for matrix in (result.pairwise, result.shapley_interaction):
        torch.testing.assert_close(matrix, matrix.T)
        assert bool((matrix.diagonal() == 0).all())


@given(st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_additive_game_has_no_interactions(n, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(n, generator=gen, dtype=torch.float64).tolist()
    result = interactions(*game_tensor(n, additive_game(n, weights, const=-1.0)))
    assert float(result.pairwise.abs().max()) <= 1e-12
    assert result.shapley_interaction is not None
    assert float(result.shapley_interaction.abs().max()) <= 1e-12
    close(banzhaf(*game_tensor(n, additive_game(n, weights))), weights, atol=1e-12)


def test_pairwise_from_partial_grid() -> None:
    n = 4
    game = _random_game(n, 3)
    keep = [frozenset()] + [frozenset({i}) for i in range(n)]
    keep += [frozenset(p) for p in itertools.combinations(range(n), 2)]
    grid = torch.tensor([[float(j in s) for j in range(n)] for s in keep])
    values = torch.tensor([game[s] for s in keep], dtype=torch.float64)
    result = interactions(grid, values)
    close(result.pairwise, brute_pairwise(n, game), atol=1e-12)
    assert result.shapley_interaction is None
    with pytest.raises(ValueError, match="no row for coalition"):
        interactions(grid[1:], values[1:])  # the empty coalition is gone
    with pytest.raises(ValueError, match="banzhaf needs every one"):
        banzhaf(grid, values)


# --------------------------------------------------------------------------
# Lookup, duplicates, trailing dims, dtypes, purity, pytrees, speed
# --------------------------------------------------------------------------


def test_values_by_coalition_averages_duplicates() -> None:
    grid = torch.tensor([[1, 0], [0, 0], [1, 0], [1, 1], [0, 1]])
    values = torch.tensor([1.0, 5.0, 3.0, 7.0, 11.0])
    table = values_by_coalition(grid, values)
    assert isinstance(table, CoalitionValues) and table.complete and table.n == 2
    assert table.masks.tolist() == [0, 1, 2, 3]
    assert table.values.tolist() == [5.0, 2.0, 11.0, 7.0]
    assert table.counts.tolist() == [1, 2, 1, 1]
    assert table.lookup(torch.tensor([[3, 1]])).tolist() == [[7.0, 2.0]]
    # duplicates enter the estimators as their mean
    dedup = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]])
    torch.testing.assert_close(
        shapley(grid, values).mean, shapley(dedup, torch.tensor([5.0, 2.0, 11.0, 7.0])).mean
    )


def test_row_order_does_not_matter() -> None:
    n = 4
    grid, values = game_tensor(n, _random_game(n, 4))
    order = torch.randperm(1 << n, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shapley(grid[order], values[order]).mean, shapley(grid, values).mean)
    torch.testing.assert_close(banzhaf(grid[order], values[order]), banzhaf(grid, values))


def test_trailing_dims_are_separate_games() -> None:
    n = 3
    grid = alpha_grid("full_factorial", n)
    values = torch.randn(1 << n, 2, 3, generator=torch.Generator().manual_seed(0))
    result = shapley(grid, values)
    inter = interactions(grid, values)
    bz = banzhaf(grid, values)
    assert result.mean.shape == (n, 2, 3) and bz.shape == (n, 2, 3)
    assert inter.pairwise.shape == (n, n, 2, 3)
    sg, perms = alpha_grid("shapley", n, seed=0, samples=4, return_permutations=True)
    sampled = shapley(sg, values[coalition_masks(sg)], permutations=perms)
    assert sampled.mean.shape == (n, 2, 3)
    for a in range(2):
        for b in range(3):
            torch.testing.assert_close(result.mean[:, a, b], shapley(grid, values[:, a, b]).mean)
            torch.testing.assert_close(bz[:, a, b], banzhaf(grid, values[:, a, b]))
            single = interactions(grid, values[:, a, b])
            torch.testing.assert_close(inter.pairwise[..., a, b], single.pairwise)
            assert inter.shapley_interaction is not None and single.shapley_interaction is not None
            torch.testing.assert_close(
                inter.shapley_interaction[..., a, b], single.shapley_interaction
            )
            one = shapley(sg, values[coalition_masks(sg), a, b], permutations=perms)
            torch.testing.assert_close(sampled.mean[:, a, b], one.mean)
            torch.testing.assert_close(sampled.std[:, a, b], one.std)


def test_result_dtypes() -> None:
    grid = alpha_grid("full_factorial", 3)
    assert shapley(grid, torch.arange(8)).mean.dtype == torch.float32
    assert shapley(grid, torch.arange(8, dtype=torch.float64)).mean.dtype == torch.float64
    assert banzhaf(grid.bool(), torch.ones(8, dtype=torch.float16)).dtype == torch.float16


def test_inputs_are_not_mutated() -> None:
    grid, perms = alpha_grid("shapley", 5, seed=0, return_permutations=True)
    values = torch.randn(grid.shape[0])
    copies = (grid.clone(), values.clone(), perms.clone())
    shapley(grid, values, permutations=perms)
    full = alpha_grid("full_factorial", 5)
    fv = torch.randn(32)
    fcopies = (full.clone(), fv.clone())
    shapley(full, fv), banzhaf(full, fv), interactions(full, fv), values_by_coalition(full, fv)
    for a, b in zip((grid, values, perms, full, fv), (*copies, *fcopies), strict=True):
        assert torch.equal(a, b)


def test_bad_grid_and_values() -> None:
    good = alpha_grid("full_factorial", 2)
    vals = torch.zeros(4)
    for fn in (shapley, banzhaf, interactions, values_by_coalition):
        with pytest.raises(ShapeError, match="one entry per grid row"):
            fn(good, torch.zeros(5))
        with pytest.raises(ShapeError, match="one entry per grid row"):
            fn(good, torch.tensor(1.0))
        with pytest.raises(ShapeError, match="rank 2"):
            fn(good[0], vals)
        with pytest.raises(ShapeError, match="empty"):
            fn(torch.zeros(0, 2), torch.zeros(0))
        with pytest.raises(ValueError, match=r"0 \(off\) or 1 \(on\).*0\.5"):
            fn(good * 0.5, vals)
        with pytest.raises(ValueError, match="NaN"):
            fn(torch.where(good == 1, float("nan"), good), vals)
        with pytest.raises(DTypeError, match=r"grid must be a torch\.Tensor"):
            fn(good.tolist(), vals)
        with pytest.raises(DTypeError, match=r"values must be a torch\.Tensor"):
            fn(good, [0.0] * 4)
        with pytest.raises(DTypeError, match="real"):
            fn(good, vals.to(torch.complex64))
    with pytest.raises(ShapeError, match="n = 0"):
        shapley(torch.zeros(3, 0), torch.zeros(3))
    with pytest.raises(ValueError, match="full coalition"):
        shapley(alpha_grid("full_factorial", 3)[:4], torch.zeros(4))
    with pytest.raises(ValueError, match="no order of the players"):
        shapley(alpha_grid("full_factorial", 3)[[0, 7]], torch.zeros(2))


def test_results_are_frozen_pytrees() -> None:
    grid = alpha_grid("full_factorial", 3)
    values = torch.randn(8)
    result = shapley(grid, values)
    assert isinstance(result, ShapleyResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mean = torch.zeros(3)  # type: ignore[misc]
    leaves = optree.tree_leaves(result, namespace="esper_func")
    assert len(leaves) == 2 and leaves[0] is result.mean
    doubled = optree.tree_map(lambda t: 2 * t, result, namespace="esper_func")
    assert isinstance(doubled, ShapleyResult) and doubled.method == "exact"
    torch.testing.assert_close(doubled.mean, 2 * result.mean)
    flat, spec = torch_pytree.tree_flatten(result)
    assert len(flat) == 2 and torch_pytree.tree_unflatten(flat, spec) == result
    inter = interactions(grid[:7], values[:7])  # not full: no interaction index
    assert inter.shapley_interaction is None
    assert len(optree.tree_leaves(inter, namespace="esper_func")) == 1
    flat, spec = torch_pytree.tree_flatten(inter)
    assert torch_pytree.tree_unflatten(flat, spec).shapley_interaction is None
    assert len(optree.tree_leaves(interactions(grid, values), namespace="esper_func")) == 2
    table = values_by_coalition(grid, values)
    assert len(optree.tree_leaves(table, namespace="esper_func")) == 3


def test_exact_attribution_works_at_n12() -> None:
    # Speed is measured in bench/sweep.py, never asserted here.
    n = 12
    grid = alpha_grid("full_factorial", n)
    values = torch.randn(1 << n, generator=torch.Generator().manual_seed(0))
    result = shapley(grid, values)
    assert result.mean.sum().item() == pytest.approx((values[-1] - values[0]).item(), abs=1e-4)
    inter = interactions(grid, values)
    assert inter.shapley_interaction is not None and inter.shapley_interaction.shape == (n, n)
