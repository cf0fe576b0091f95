"""Counterfactual grids and attribution over ``(grid, values)``.

Pure tensor math; nothing here knows about models. A *grid* is a ``[K, n]``
tensor whose row ``k`` switches each of ``n`` players (seed slots) on (``1``)
or off (``0``); *values* is ``[K]`` (or ``[K, *T]``) with the value of each
row's coalition, e.g. the validation accuracy with exactly those seeds
enabled. :func:`alpha_grid` builds grids; :func:`coalition_grid` turns them
into alpha rows for a model's seeds at their current alphas (the one
builder behind the command line's sweep and the epoch loop's validation
grid); :func:`shapley`, :func:`banzhaf` and :func:`interactions` attribute
``values`` back to the players.

Coalitions and bitmasks
    Row ``x`` is the coalition ``S = {j : x[j] = 1}`` with bitmask
    ``sum_j x[j] << j`` (column ``j`` is bit ``j``). Every function looks
    rows up through :func:`values_by_coalition`, which maps rows to masks
    and **averages the values of duplicate rows** (repeated, noisy
    evaluations of one coalition count once, with their mean). ``n`` is at
    most :data:`MAX_PLAYERS` (masks are ``int64``).

Estimators (``v`` the value of a coalition, ``N`` all ``n`` players)
    - Shapley, exact (grid holds all ``2**n`` coalitions)::

          phi_i = sum_{S ⊆ N∖{i}} |S|! (n-|S|-1)! / n! · (v(S ∪ {i}) - v(S))

      computed as one ``[n, 2**n] @ [2**n, *T]`` product (chunked), in
      float64; ``std`` is zero.
    - Shapley, sampled (``permutations`` given): for each order ``pi``,
      ``phi_i(pi) = v(P_i ∪ {i}) - v(P_i)`` with ``P_i`` the players before
      ``i`` in ``pi``; the estimate is the mean over orders. Every order's
      contributions sum to ``v(N) - v(∅)``, so the estimate is efficient for
      any sample, and exact for additive games. If the orders come in
      antithetic pairs (row ``2p + 1`` is row ``2p`` reversed, as
      :func:`shapley_permutations` returns them) each pair is averaged
      first and the standard error is taken over the ``P / 2`` pair means;
      otherwise over the ``P`` orders: ``std = sd(units) / sqrt(#units)``
      (Bessel-corrected; NaN with a single unit, where it is unknown).
      This reuses exactly the rows the permutations' prefixes name, which
      are the rows ``alpha_grid("shapley", ...)`` evaluates.
    - Banzhaf (full factorial)::

          beta_i = 2**-(n-1) · sum_{S ⊆ N∖{i}} (v(S ∪ {i}) - v(S))

    - Pairwise interaction with all other players off (esper-lite's
      ``I_ij``; needs only the empty, singleton and pair rows)::

          I_ij = v({i, j}) - v({i}) - v({j}) + v(∅)

    - Shapley interaction index (full factorial)::

          SI_ij = sum_{S ⊆ N∖{i,j}} |S|! (n-|S|-2)! / (n-1)!
                  · (v(S ∪ {i,j}) - v(S ∪ {i}) - v(S ∪ {j}) + v(S))

    Both interaction matrices are symmetric with a zero diagonal.

esper-lite facts reproduced (``src/esper/simic/attribution/counterfactual.py``)
    - full factorial row ``k`` enables slot ``j`` iff bit ``j`` of ``k`` is
      set (row 0 all off, the last row all on);
    - ablation (esper-lite's ``"ablation_only"``): all on, then each slot off
      in turn, then all off (``n + 2`` rows);
    - Shapley configurations: the ablation rows, then for each of
      ``samples // 2`` random orders the ``n + 1`` prefixes of the order
      followed by the ``n + 1`` prefixes of its reverse (antithetic), rows
      already present skipped; ``samples`` defaults to 20;
    - esper-lite draws *fresh* orders when estimating and skips marginals
      whose rows are missing; here the estimator uses the orders that built
      the grid, so no marginal is lost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal, overload

import torch
from torch import Tensor

from esper_func._pytree import pytree_dataclass, static_field
from esper_func._rng import DEFAULT_SEED
from esper_func.errors import DTypeError, InvalidArgumentError, InvalidTypeError, ShapeError

__all__ = [
    "STRATEGIES",
    "DEFAULT_SHAPLEY_SAMPLES",
    "MAX_FULL_FACTORIAL_N",
    "MAX_PLAYERS",
    "CoalitionValues",
    "ShapleyResult",
    "InteractionResult",
    "alpha_grid",
    "coalition_grid",
    "shapley_permutations",
    "coalition_masks",
    "values_by_coalition",
    "shapley",
    "banzhaf",
    "interactions",
]

Strategy = Literal["full_factorial", "ablation", "shapley"]

#: The grid strategies :func:`alpha_grid` knows.
STRATEGIES: Final[tuple[str, ...]] = ("full_factorial", "ablation", "shapley")
#: Permutations sampled by the ``"shapley"`` strategy when ``samples`` is
#: omitted (esper-lite's ``CounterfactualConfig.shapley_samples``): 10
#: antithetic pairs.
DEFAULT_SHAPLEY_SAMPLES: Final[int] = 20
#: Largest ``n`` for which :func:`alpha_grid` builds a full factorial
#: (``2**20`` rows).
MAX_FULL_FACTORIAL_N: Final[int] = 20
#: Largest number of players (coalitions are ``int64`` bitmasks).
MAX_PLAYERS: Final[int] = 62

# Rows of the full factorial processed per chunk by the exact estimators
# (bounds the temporaries to a few MiB whatever n is).
_CHUNK_ELEMENTS: Final[int] = 1 << 22


# --------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class CoalitionValues:
    """The distinct coalitions of a grid and their (averaged) values.

    Attributes:
        masks: ``[M]`` int64, the distinct coalition bitmasks, ascending.
        values: ``[M, *T]``, the mean value of the grid rows with each mask.
        counts: ``[M]`` int64, how many grid rows had each mask.
        n: number of players (static).
    """

    masks: Tensor
    values: Tensor
    counts: Tensor
    n: int = static_field()

    @property
    def complete(self) -> bool:
        """Whether every one of the ``2**n`` coalitions is present."""
        return int(self.masks.shape[0]) == 1 << self.n

    def lookup(self, masks: Tensor) -> Tensor:
        """Values of the coalitions ``masks`` (any shape ``S``) as ``[*S, *T]``.

        Raises:
            ValueError: if any mask is not in the table (the message names the
                first missing coalition and how many are missing).
        """
        flat = masks.reshape(-1).to(torch.int64)
        idx = torch.searchsorted(self.masks, flat).clamp_(max=self.masks.shape[0] - 1)
        found = self.masks[idx] == flat
        if not bool(found.all()):
            missing = flat[~found]
            first = int(missing[0])
            row = [(first >> j) & 1 for j in range(self.n)]
            n_missing = int(torch.unique(missing).numel())
            raise InvalidArgumentError(
                f"the grid has no row for coalition {row} (bitmask {first}); "
                f"{n_missing} needed coalition(s) are missing from the "
                f"{self.masks.shape[0]} the grid holds"
            )
        return self.values[idx].reshape((*masks.shape, *self.values.shape[1:]))


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class ShapleyResult:
    """Shapley values with their standard errors.

    Attributes:
        mean: ``[n, *T]``, the Shapley value (estimate) of each player.
        std: ``[n, *T]``, the standard error of ``mean``: zeros when exact,
            NaN when a single sampling unit leaves it unknown.
        n_samples: permutations used (0 when exact; static).
        method: ``"exact"``, ``"permutation"`` or ``"antithetic"`` (static).
    """

    mean: Tensor
    std: Tensor
    n_samples: int = static_field()
    method: str = static_field()


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class InteractionResult:
    """Pairwise interaction matrices, ``[n, n, *T]``, symmetric, zero diagonal.

    Attributes:
        pairwise: ``v({i,j}) - v({i}) - v({j}) + v(∅)`` (all others off).
        shapley_interaction: the Shapley interaction index, or ``None`` when
            the grid is not a full factorial.
    """

    pairwise: Tensor
    shapley_interaction: Tensor | None = None


# --------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------


def _check_n(n: object, *, limit: int = MAX_PLAYERS) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidTypeError(f"n must be an int (the number of players); got {type(n).__name__}")
    if n < 1:
        raise InvalidArgumentError(f"n must be >= 1; got {n}")
    if n > limit:
        raise InvalidArgumentError(f"n must be <= {limit} (coalitions are int64 bitmasks); got {n}")
    return n


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A fresh CPU generator: seeded from ``seed``, or a copy of its state."""
    gen = torch.Generator()
    if seed is None:
        gen.manual_seed(DEFAULT_SEED)
    elif isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise InvalidArgumentError(f"seed generator must be a CPU generator; got device {seed.device}")
        gen.set_state(seed.get_state())  # a copy: the caller's generator is not advanced
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidTypeError(
            f"seed must be an int, a torch.Generator or None; got {type(seed).__name__}"
        )
    elif not 0 <= seed < 2**64:
        raise InvalidArgumentError(f"seed must be in [0, 2**64); got {seed}")
    else:
        gen.manual_seed(seed)
    return gen


def _check_samples(samples: object) -> int:
    if samples is None:
        return DEFAULT_SHAPLEY_SAMPLES
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise InvalidTypeError(f"samples must be an int; got {type(samples).__name__}")
    if samples < 2 or samples % 2:
        raise InvalidArgumentError(
            "samples is the number of permutations, drawn in antithetic pairs "
            f"(an order and its reverse), so it must be even and >= 2; got {samples}"
        )
    return samples


def shapley_permutations(
    n: int, *, seed: int | torch.Generator | None = None, samples: int | None = None
) -> Tensor:
    """Random player orders in antithetic pairs, ``[samples, n]`` int64.

    Row ``2p`` is a uniformly random permutation of ``range(n)`` and row
    ``2p + 1`` is its reverse. ``samples`` counts permutations (each pair
    counts 2; even, default :data:`DEFAULT_SHAPLEY_SAMPLES`). ``seed`` (an
    int, or a CPU ``torch.Generator`` whose state is copied, never
    advanced; ``None`` means seed 0) makes the result reproducible; torch's
    global RNG is not touched.
    """
    n = _check_n(n)
    samples = _check_samples(samples)
    gen = _generator(seed)
    keys = torch.rand(samples // 2, n, generator=gen, dtype=torch.float64)
    forward = torch.argsort(keys, dim=1, stable=True)
    return torch.stack([forward, forward.flip(1)], dim=1).reshape(samples, n)


def _rows(masks: Tensor, n: int) -> Tensor:
    return ((masks.unsqueeze(-1) >> torch.arange(n)) & 1).to(torch.float32)


def _prefix_masks(permutations: Tensor) -> Tensor:
    """``[P, n + 1]`` masks of the prefixes of each order (lengths 0..n)."""
    bits = torch.ones((), dtype=torch.int64, device=permutations.device) << permutations
    zero = torch.zeros(permutations.shape[0], 1, dtype=torch.int64, device=permutations.device)
    return torch.cat([zero, bits.cumsum(dim=1)], dim=1)


def _ablation_masks(n: int) -> Tensor:
    full = (1 << n) - 1
    each_off = full - (torch.ones((), dtype=torch.int64) << torch.arange(n))
    return torch.cat([torch.tensor([full]), each_off, torch.tensor([0])])


def _first_occurrences(masks: Tensor) -> Tensor:
    """``masks`` with later duplicates dropped, first-occurrence order kept."""
    uniq, inverse = torch.unique(masks, return_inverse=True)
    positions = torch.arange(masks.numel())
    first = torch.full((uniq.numel(),), masks.numel(), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return masks[first.sort().values]


@overload
def alpha_grid(
    strategy: Strategy | str,
    n: int,
    *,
    seed: int | torch.Generator | None = ...,
    samples: int | None = ...,
    return_permutations: Literal[False] = ...,
) -> Tensor: ...
@overload
def alpha_grid(
    strategy: Strategy | str,
    n: int,
    *,
    seed: int | torch.Generator | None = ...,
    samples: int | None = ...,
    return_permutations: Literal[True],
) -> tuple[Tensor, Tensor]: ...
def alpha_grid(
    strategy: Strategy | str,
    n: int,
    *,
    seed: int | torch.Generator | None = None,
    samples: int | None = None,
    return_permutations: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Alpha configurations ``[K, n]`` (float32, entries 0. or 1.) to evaluate.

    Strategies (row order fixed and part of the contract):

    - ``"full_factorial"``: all ``2**n`` coalitions; row ``k`` has bit ``j``
      of ``k`` in column ``j`` (row 0 all off, row ``2**n - 1`` all on).
      ``n <= MAX_FULL_FACTORIAL_N``.
    - ``"ablation"``: all on; then row ``1 + i`` has only player ``i`` off;
      then all off: always ``n + 2`` rows (for ``n = 1`` rows 1 and 2 are
      both ``[0]``; the duplicate is kept so the layout stays fixed).
    - ``"shapley"``: the distinct ablation rows, then, for each antithetic
      pair of :func:`shapley_permutations` ``(n, seed=seed,
      samples=samples)``, the prefixes (lengths ``0..n``) of the order and
      then of its reverse, each row kept only the first time it appears.
      With ``return_permutations=True`` the orders ``[samples, n]`` are
      returned too, for ``shapley(grid, values, permutations=...)``.

    ``seed`` and ``samples`` only affect ``"shapley"``; ``samples`` given to
    another strategy is an error, ``seed`` is ignored.

    Raises:
        ValueError: unknown strategy (the valid ones are listed), ``n < 1``,
            ``n`` too large, bad ``samples``.
        TypeError: ``n``, ``seed`` or ``samples`` of the wrong type.
    """
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(
            f"unknown grid strategy {strategy!r}; expected one of "
            f"{', '.join(map(repr, STRATEGIES))}"
        )
    if strategy != "shapley":
        if samples is not None:
            raise InvalidArgumentError(f"samples only applies to strategy 'shapley', not {strategy!r}")
        if return_permutations:
            raise InvalidArgumentError(
                f"return_permutations only applies to strategy 'shapley', not {strategy!r}"
            )
    if strategy == "full_factorial":
        n = _check_n(n)
        if n > MAX_FULL_FACTORIAL_N:
            raise InvalidArgumentError(
                f"a full factorial over n={n} players has 2**{n} = {1 << n} rows; "
                f"the limit is n <= {MAX_FULL_FACTORIAL_N}. Use strategy 'shapley' "
                "(sampled permutations) for this many players"
            )
        return _rows(torch.arange(1 << n), n)
    n = _check_n(n)
    if strategy == "ablation":
        return _rows(_ablation_masks(n), n)
    permutations = shapley_permutations(n, seed=seed, samples=samples)
    masks = torch.cat([_ablation_masks(n), _prefix_masks(permutations).reshape(-1)])
    grid = _rows(_first_occurrences(masks), n)
    return (grid, permutations) if return_permutations else grid


def coalition_grid(base: Tensor, players: Sequence[int], coalitions: Tensor) -> Tensor:
    """Alpha rows ``[K, len(base)]`` for coalitions of some of a model's slots, at their current alphas.

    Row ``k`` is ``base`` with the alpha of player ``j`` (column
    ``players[j]``) kept where ``coalitions[k, j] == 1`` and set to ``0``
    where it is ``0``; the other columns keep ``base``. With ``coalitions =
    alpha_grid(strategy, len(players))`` this is that strategy over the
    players at their real alphas; e.g. the first ``m + 1`` ablation rows
    are the real alphas, then each player switched off in turn (the
    validation grid of the epoch loop).

    Args:
        base: ``[n_slots]`` floating-point alphas (``ef.alphas_of(model, states)``).
        players: distinct column indices into ``base`` (e.g. the routed seeds').
        coalitions: ``[K, len(players)]`` of zeros and ones.

    Returns:
        A new ``[K, n_slots]`` tensor in ``base``'s dtype and on its device.
    """
    if not isinstance(base, Tensor) or base.ndim != 1 or not base.is_floating_point():
        raise DTypeError(f"base must be a 1-D floating-point tensor of alphas; got {_describe(base)}")
    players = [int(p) for p in players]
    if len(set(players)) != len(players) or any(not 0 <= p < base.shape[0] for p in players):
        raise InvalidArgumentError(f"players must be distinct column indices in [0, {base.shape[0]}); got {players}")
    if not isinstance(coalitions, Tensor) or coalitions.ndim != 2 or coalitions.shape[1] != len(players):
        raise ShapeError(f"coalitions must be a [K, {len(players)}] tensor (one column per player); got {_describe(coalitions)}")
    if not bool(((coalitions == 0) | (coalitions == 1)).all()):
        raise InvalidArgumentError("coalitions must hold only 0 (off) and 1 (on)")
    grid = base.repeat(coalitions.shape[0], 1)
    if players:
        grid[:, players] = coalitions.to(dtype=base.dtype, device=base.device) * base[players]
    return grid


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


# --------------------------------------------------------------------------
# Coalition lookup
# --------------------------------------------------------------------------


def _check_grid(grid: object) -> Tensor:
    if not isinstance(grid, Tensor):
        raise DTypeError(f"grid must be a torch.Tensor [K, n]; got {type(grid).__name__}")
    if grid.dtype.is_complex:
        raise DTypeError(f"grid must be real (bool, integer or floating); got {grid.dtype}")
    if grid.ndim != 2:
        raise ShapeError(f"grid must have rank 2, [K, n]; got shape {tuple(grid.shape)}")
    k, n = grid.shape
    if k == 0:
        raise ShapeError("grid is empty (K = 0 rows); attribution needs evaluated coalitions")
    if n == 0:
        raise ShapeError("grid has n = 0 columns; attribution needs at least one player")
    if n > MAX_PLAYERS:
        raise ShapeError(f"grid has n = {n} players; at most {MAX_PLAYERS} are supported")
    if grid.dtype.is_floating_point and bool(torch.isnan(grid).any()):
        raise InvalidArgumentError("grid contains NaN; entries must be 0 (off) or 1 (on)")
    binary = (grid == 0) | (grid == 1)
    if not bool(binary.all()):
        bad = grid[~binary][0].item()
        raise InvalidArgumentError(
            f"grid entries must be 0 (off) or 1 (on) for attribution; found {bad!r}"
        )
    return grid


def _result_dtype(values: Tensor) -> torch.dtype:
    return values.dtype if values.dtype.is_floating_point else torch.get_default_dtype()


def _check_values(values: object, k: int) -> Tensor:
    if not isinstance(values, Tensor):
        raise DTypeError(
            f"values must be a torch.Tensor [K] or [K, ...]; got {type(values).__name__}"
        )
    if values.dtype.is_complex:
        raise DTypeError(f"values must be real; got {values.dtype}")
    if values.ndim == 0 or values.shape[0] != k:
        raise ShapeError(
            f"values must have one entry per grid row, shape [{k}] or [{k}, ...]; "
            f"got shape {tuple(values.shape)}"
        )
    return values


def coalition_masks(grid: Tensor) -> Tensor:
    """The bitmask ``sum_j grid[k, j] << j`` of each row, ``[K]`` int64.

    Row ``k`` of ``alpha_grid("full_factorial", n)`` has mask ``k``.
    Raises on a grid that is not a ``[K, n]`` tensor of 0s and 1s.
    """
    grid = _check_grid(grid)
    n = grid.shape[1]
    weights = torch.ones((), dtype=torch.int64, device=grid.device) << torch.arange(
        n, device=grid.device
    )
    return (grid.to(torch.int64) * weights).sum(dim=1)


def _table(grid: Tensor, values: Tensor) -> CoalitionValues:
    """Like :func:`values_by_coalition`, with values in float64."""
    masks = coalition_masks(grid)
    values = _check_values(values, masks.shape[0]).to(torch.float64)
    if bool((masks[1:] > masks[:-1]).all()):  # already distinct and ascending (fast path)
        ones = torch.ones_like(masks)
        return CoalitionValues(masks=masks, values=values, counts=ones, n=int(grid.shape[1]))
    uniq, inverse, counts = torch.unique(masks, return_inverse=True, return_counts=True)
    if uniq.numel() == masks.numel():
        means = torch.empty_like(values).index_copy_(0, inverse, values)
    else:
        sums = values.new_zeros((uniq.numel(), *values.shape[1:]))
        sums.index_add_(0, inverse, values)
        means = sums / counts.reshape(-1, *([1] * (values.ndim - 1))).to(torch.float64)
    return CoalitionValues(masks=uniq, values=means, counts=counts, n=int(grid.shape[1]))


def values_by_coalition(grid: Tensor, values: Tensor) -> CoalitionValues:
    """Group ``values`` by the coalition of each ``grid`` row.

    Returns a :class:`CoalitionValues` with the distinct masks (ascending),
    the mean value of each (duplicate rows averaged) and the row counts;
    ``.lookup(masks)`` reads values back by mask. Values keep their floating
    dtype (integers and bools become the default float dtype).

    Raises:
        DTypeError: ``grid``/``values`` not real tensors.
        ShapeError: ``grid`` not ``[K, n]`` with ``K, n >= 1``; ``values``
            not ``[K, ...]``.
        ValueError: grid entries other than 0 and 1 (NaN included).
    """
    table = _table(grid, values)
    return CoalitionValues(
        masks=table.masks,
        values=table.values.to(_result_dtype(values)),
        counts=table.counts,
        n=table.n,
    )


def _require_complete(table: CoalitionValues, what: str) -> None:
    if not table.complete:
        n = table.n
        raise InvalidArgumentError(
            f"{what} needs every one of the 2**{n} = {1 << n} coalitions; the grid has "
            f"{table.masks.shape[0]} distinct rows. Evaluate alpha_grid('full_factorial', {n})"
            + (
                " (or, for Shapley values, pass permutations= from "
                f"alpha_grid('shapley', {n}, return_permutations=True))"
                if what == "exact Shapley"
                else ""
            )
        )


# --------------------------------------------------------------------------
# Exact estimators over a full factorial
# --------------------------------------------------------------------------


def _chunks(n: int, width: int) -> Iterator[tuple[int, int]]:
    """Ranges of masks covering ``0 .. 2**n - 1`` in bounded chunks."""
    total = 1 << n
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    for start in range(0, total, step):
        yield start, min(total, start + step)


def _exact_linear(table: CoalitionValues, coefficients: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum_T coefficients(T)[:, i] · v(T)`` over all coalitions, ``[n, P]``."""
    n = table.n
    v = table.values.reshape(1 << n, -1)
    out = torch.zeros(n, v.shape[1], dtype=torch.float64, device=v.device)
    for start, stop in _chunks(n, n + v.shape[1]):
        masks = torch.arange(start, stop, device=v.device)
        bits = ((masks.unsqueeze(1) >> torch.arange(n, device=v.device)) & 1).to(torch.float64)
        out += coefficients(bits).T @ v[start:stop]
    return out


def _exact_shapley(table: CoalitionValues) -> Tensor:
    n = table.n
    # weight(s) = s! (n-s-1)! / n! = 1 / (n C(n-1, s)), padded so that
    # padded[s + 1] = weight(s) and out-of-range sizes weigh 0.
    weight = [1.0 / (n * math.comb(n - 1, s)) for s in range(n)]
    padded = torch.tensor([0.0, *weight, 0.0], dtype=torch.float64, device=table.values.device)

    def coefficients(bits: Tensor) -> Tensor:
        size = bits.sum(dim=1).to(torch.int64)
        with_i = padded[size].unsqueeze(1)  # T = S ∪ {i}, |S| = |T| - 1
        without_i = padded[size + 1].unsqueeze(1)  # T = S, |S| = |T|
        return bits * with_i - (1.0 - bits) * without_i

    return _exact_linear(table, coefficients)


def _exact_banzhaf(table: CoalitionValues) -> Tensor:
    scale = 1.0 / (1 << (table.n - 1))
    return _exact_linear(table, lambda bits: (2.0 * bits - 1.0) * scale)


def _exact_shapley_interaction(table: CoalitionValues) -> Tensor:
    n = table.n
    v = table.values.reshape(1 << n, -1)
    out = torch.zeros(n, n, v.shape[1], dtype=torch.float64, device=v.device)
    if n < 2:
        return out
    # weight(s) = s! (n-s-2)! / (n-1)! = 1 / ((n-1) C(n-2, s)), s = |T ∖ {i,j}|;
    # padded[s + 2] = weight(s), 0 outside 0..n-2.
    weight = [1.0 / ((n - 1) * math.comb(n - 2, s)) for s in range(n - 1)]
    padded = torch.tensor([0.0, 0.0, *weight, 0.0, 0.0], dtype=torch.float64, device=v.device)
    for start, stop in _chunks(n, n * n + n * v.shape[1]):
        masks = torch.arange(start, stop, device=v.device)
        on = ((masks.unsqueeze(1) >> torch.arange(n, device=v.device)) & 1).to(torch.float64)
        off = 1.0 - on
        size = on.sum(dim=1).to(torch.int64)
        chunk = v[start:stop]
        # T contributes with sign (2 b_i - 1)(2 b_j - 1) and weight(|T| - b_i - b_j).
        for a, xa in ((0, off), (1, on)):
            for b, xb in ((0, off), (1, on)):
                weighted = chunk * padded[size + 2 - a - b].unsqueeze(1)  # [t, P]
                sign = 1.0 if a == b else -1.0
                # sum_t xa[t, i] xb[t, j] weighted[t, p] as one matmul.
                left = (xa.unsqueeze(2) * weighted.unsqueeze(1)).reshape(xa.shape[0], -1)
                out += sign * (left.T @ xb).reshape(n, -1, n).permute(0, 2, 1)
    out.diagonal(dim1=0, dim2=1).zero_()
    return out


# --------------------------------------------------------------------------
# Public attribution
# --------------------------------------------------------------------------


def _check_permutations(permutations: object, n: int, device: torch.device) -> Tensor:
    if not isinstance(permutations, Tensor):
        raise DTypeError(
            f"permutations must be a torch.Tensor [P, n] of player orders; got "
            f"{type(permutations).__name__}"
        )
    if permutations.dtype.is_floating_point or permutations.dtype.is_complex or (
        permutations.dtype == torch.bool
    ):
        raise DTypeError(f"permutations must have an integer dtype; got {permutations.dtype}")
    if permutations.ndim != 2 or permutations.shape[1] != n or permutations.shape[0] == 0:
        raise ShapeError(
            f"permutations must have shape [P, {n}] with P >= 1 (one order of the grid's "
            f"{n} players per row); got {tuple(permutations.shape)}"
        )
    perms = permutations.to(device=device, dtype=torch.int64)
    expected = torch.arange(n, device=device).expand_as(perms)
    if not bool((perms.sort(dim=1).values == expected).all()):
        raise InvalidArgumentError(f"every row of permutations must be a permutation of range({n})")
    return perms


#: At most this many orders are read off a grid by :func:`shapley` without ``permutations``.
MAX_INFERRED_ORDERS = 20_000


def _orders_in(table: CoalitionValues) -> Tensor:
    """Every order of the players whose prefixes are all coalitions of ``table`` (depth-first)."""
    n = table.n
    present = set(table.masks.tolist())
    full = (1 << n) - 1
    if 0 not in present or full not in present:
        raise InvalidArgumentError(
            "Shapley values need the empty and the full coalition, and either all 2**n coalitions "
            "(exact) or chains of coalitions from empty to full (sampled); use alpha_grid('full_factorial', n) "
            "or alpha_grid('shapley', n, ...), or pass permutations="
        )
    orders: list[list[int]] = []
    stack: list[tuple[int, list[int]]] = [(0, [])]
    while stack:
        mask, order = stack.pop()
        if mask == full:
            orders.append(order)
            if len(orders) > MAX_INFERRED_ORDERS:
                raise InvalidArgumentError(
                    f"the grid chains more than {MAX_INFERRED_ORDERS} orders; pass the sampled permutations= "
                    "(alpha_grid(..., return_permutations=True)) or evaluate a full factorial"
                )
            continue
        for j in reversed(range(n)):
            nxt = mask | (1 << j)
            if nxt != mask and nxt in present:
                stack.append((nxt, [*order, j]))
    if not orders:
        raise InvalidArgumentError(
            "no order of the players has all its prefixes in the grid, so Shapley values cannot be "
            "estimated from it; use alpha_grid('shapley', n, ...) or a full factorial, or pass permutations="
        )
    return torch.tensor(orders, dtype=torch.int64, device=table.masks.device)


def shapley(
    grid: Tensor, values: Tensor, *, permutations: Tensor | None = None
) -> ShapleyResult:
    """Shapley values of the players of ``grid`` for the game ``values``.

    - ``permutations`` given (``[P, n]`` integer orders, e.g. from
      ``alpha_grid("shapley", n, return_permutations=True)``): the
      permutation estimator (module docstring); ``std`` is the standard
      error, over antithetic pairs when the orders come in pairs. Every
      prefix of every order must be a grid row.
    - otherwise, if the grid holds all ``2**n`` coalitions, the exact value
      with ``std`` zeros;
    - otherwise the permutation estimator over every order whose prefixes
      are all grid rows (for a grid from ``alpha_grid("shapley", ...)``:
      the sampled orders, plus any other order its rows happen to chain);
      ``std`` is the standard error over those orders. Passing the sampled
      ``permutations`` instead keeps the antithetic pairing.

    ``values`` may be ``[K]`` or ``[K, *T]`` (each trailing element is a
    separate game); ``mean`` and ``std`` are ``[n, *T]``.

    Raises:
        ValueError: neither a full factorial nor ``permutations`` (the
            message says what to evaluate), a missing prefix row, bad grid
            entries or orders.
        ShapeError, DTypeError: malformed ``grid``/``values``/``permutations``.
    """
    table = _table(grid, values)
    dtype = _result_dtype(values)
    n = table.n
    trailing = tuple(table.values.shape[1:])
    if permutations is None and table.complete:
        mean = _exact_shapley(table).reshape(n, *trailing).to(dtype)
        return ShapleyResult(mean=mean, std=torch.zeros_like(mean), n_samples=0, method="exact")
    if permutations is None:
        perms = _orders_in(table)
    else:
        perms = _check_permutations(permutations, n, table.masks.device)
    p = perms.shape[0]
    prefix_values = table.lookup(_prefix_masks(perms))  # [P, n + 1, *T]
    marginal = prefix_values[:, 1:] - prefix_values[:, :-1]  # by position
    index = perms.reshape(p, n, *([1] * len(trailing))).expand(p, n, *trailing)
    per_player = torch.empty_like(marginal).scatter_(1, index, marginal)  # [P, n, *T]
    paired = p % 2 == 0 and bool((perms[1::2] == perms[0::2].flip(1)).all())
    units = per_player.reshape(p // 2, 2, n, *trailing).mean(dim=1) if paired else per_player
    mean = units.mean(dim=0)
    count = units.shape[0]
    if count >= 2:
        std = units.std(dim=0, correction=1) / math.sqrt(count)
    else:
        std = torch.full_like(mean, math.nan)
    return ShapleyResult(
        mean=mean.to(dtype),
        std=std.to(dtype),
        n_samples=p,
        method="antithetic" if paired else "permutation",
    )


def banzhaf(grid: Tensor, values: Tensor) -> Tensor:
    """Banzhaf values ``[n, *T]`` from a full factorial grid.

    ``beta_i = 2**-(n-1) · sum_{S ⊆ N∖{i}} (v(S ∪ {i}) - v(S))``, the mean
    marginal contribution of ``i`` over all coalitions of the others.

    Raises:
        ValueError: the grid lacks some of the ``2**n`` coalitions, bad entries.
        ShapeError, DTypeError: malformed ``grid``/``values``.
    """
    table = _table(grid, values)
    _require_complete(table, "banzhaf")
    return _exact_banzhaf(table).reshape(table.n, *table.values.shape[1:]).to(
        _result_dtype(values)
    )


def interactions(grid: Tensor, values: Tensor) -> InteractionResult:
    """Pairwise interactions ``[n, n, *T]`` (symmetric, zero diagonal).

    ``pairwise[i, j] = v({i,j}) - v({i}) - v({j}) + v(∅)`` (all other players
    off; esper-lite's interaction term) needs the empty, singleton and pair
    rows only. ``shapley_interaction`` is the exact Shapley interaction index
    when the grid is a full factorial, else ``None``.

    Raises:
        ValueError: a needed empty/singleton/pair row is missing, bad entries.
        ShapeError, DTypeError: malformed ``grid``/``values``.
    """
    table = _table(grid, values)
    dtype = _result_dtype(values)
    n = table.n
    trailing = tuple(table.values.shape[1:])
    device = table.masks.device
    single = torch.ones((), dtype=torch.int64, device=device) << torch.arange(n, device=device)
    pair = single.unsqueeze(0) | single.unsqueeze(1)  # [n, n]; diagonal = singletons
    f_pair = table.lookup(pair)
    f_single = table.lookup(single)
    f_empty = table.lookup(torch.zeros((), dtype=torch.int64, device=device))
    extra = (1,) * len(trailing)
    pairwise = f_pair - f_single.reshape(n, 1, *trailing) - f_single.reshape(1, n, *trailing)
    pairwise = pairwise + f_empty.reshape(1, 1, *trailing)
    diagonal = torch.eye(n, dtype=torch.bool, device=device).reshape(n, n, *extra)
    pairwise = pairwise.masked_fill(diagonal, 0.0)
    index = None
    if table.complete:
        index = _exact_shapley_interaction(table).reshape(n, n, *trailing).to(dtype)
    return InteractionResult(pairwise=pairwise.to(dtype), shapley_interaction=index)
