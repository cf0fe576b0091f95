"""Bring your own host: grow seeds into an MLP on scikit-learn's breast-cancer data.

The code blocks of docs/hosts.md are this file, in order; tests/test_host_protocol.py
runs ``main()`` at small sizes and checks what it returns. Run it on its own with
``python docs/examples/tabular_mlp.py``.
"""

import dataclasses
import itertools
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import esper_func as ef
from esper_func.controller import HeuristicConfig, heuristic
from esper_func.fit import FitConfig, FitResult, LoopState, fit
from esper_func.hosts import build_seeded, check_span
from esper_func.runs import load_run, save_run

# A topology: the features at this host's injection points are vectors [B, C]
# (no dimension to pool), and a blending seed keeps reading the detached host
# features, as CNN seeds do.
MLP = ef.Topology("mlp", layout="BC", isolate_blending=True)


@dataclasses.dataclass(frozen=True)
class MLPHost(ef.HostBase):
    """A ReLU MLP; an injection point after each hidden layer (``r0c0``, ``r0c1``, ...)."""

    in_features: int
    num_classes: int
    width: int = 32
    depth: int = 3

    topology: ClassVar[ef.Topology] = MLP

    @property
    def injection_points(self) -> tuple[ef.InjectionPoint, ...]:
        return tuple(ef.InjectionPoint(f"r0c{i}", surface=i + 1, channels=self.width) for i in range(self.depth))

    def build_module(self, *, seed: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        return build_seeded(lambda: MLPModule(self), seed=seed, device=device)

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        fork = torch.Generator().manual_seed(0)
        if generator is not None:  # read the caller's generator, do not advance it
            fork.set_state(generator.get_state())
        return torch.randn(batch, self.in_features, generator=fork)


class MLPModule(nn.Module):
    """Surface 0 is the input, surface i the i-th hidden layer's output, the last one the logits."""

    def __init__(self, spec: MLPHost) -> None:
        super().__init__()
        self.slot_ids = spec.slot_ids
        self.in_features = spec.in_features
        widths = [spec.in_features] + [spec.width] * spec.depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(spec.width, spec.num_classes)

    def forward(self, x: Tensor, start: int = 0, stop: int | None = None, rng: torch.Generator | None = None) -> Tensor:
        n = len(self.layers)
        start, stop = check_span(start, stop, n, self.slot_ids)
        if start == 0 and (x.ndim != 2 or x.shape[1] != self.in_features):
            raise ef.ShapeError(f"MLPHost takes [B, {self.in_features}] features; got {tuple(x.shape)}")
        for layer in self.layers[start : min(stop, n)]:
            x = F.relu(layer(x))
        return self.head(x) if stop == n + 1 else x


# Seeds for the "mlp" topology map [B, C] to [B, C]. A blueprint's build function
# is module-level (blueprints pickle by reference), and a seed keeps its state in
# parameters only (no BatchNorm).
class ResidualSeed(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.gelu(self.down(self.norm(x))))


def build_residual(dim: int) -> nn.Module:
    return ResidualSeed(dim, max(4, dim // 2))


def build_wide_residual(dim: int) -> nn.Module:
    return ResidualSeed(dim, 2 * dim)


def make_registry() -> ef.Registry:
    """The built-in blueprints, two seeds for "mlp", and the host class (so checkpoints can rebuild it)."""
    return (
        ef.default_registry()
        .with_blueprint(ef.Blueprint("residual", MLP, build_residual, 600, "LayerNorm, C -> C/2 -> C"))
        .with_blueprint(ef.Blueprint("wide_residual", MLP, build_wide_residual, 4200, "LayerNorm, C -> 2C -> C"))
        .with_host(MLPHost)
    )


def load_data(seed: int = 0) -> ef.data.Dataset:
    """scikit-learn's breast-cancer data (569 samples, 30 features, 2 classes), standardised, 80/20 split."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = len(y) // 5
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    return ef.data.Dataset(x[train], y[train], x[val], y[val], num_classes=2, name="breast_cancer")


def accuracy(model: ef.Model, state: ef.TrainState, data: ef.data.Dataset) -> float:
    """Validation accuracy of ``ef.predict`` at the seeds' own alphas."""
    alphas = ef.alphas_of(model, state.seeds)
    logits = ef.predict(model, state.params, state.buffers, alphas, data.x_val)
    return float((logits.argmax(-1) == data.y_val).double().mean())


# A controller that germinates early and a permissive gate, so that a short run
# goes through the whole lifecycle.
CONTROLLER = heuristic(
    HeuristicConfig(stabilization_epochs=0, min_epochs_before_germinate=2, plateau_epochs_to_germinate=1, tempo=2)
)
GATES = ef.Gates(permissive=True, min_blending_epochs=1)


def start(host: MLPHost, optimizer: ef.optim.Optimizer, seed: int = 0) -> tuple[ef.Model, ef.TrainState]:
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(seed))
    return model, ef.init_train_state(model, params, buffers, optimizer=optimizer, key=seed)


def train(
    model: ef.Model,
    state: ef.TrainState,
    data: ef.data.Dataset,
    registry: ef.Registry,
    optimizer: ef.optim.Optimizer,
    epochs: int,
    loop: LoopState | None = None,
) -> FitResult:
    """``fit`` to epoch ``epochs`` (from ``loop``'s epoch when resuming): the in-memory dataset path."""
    config = FitConfig(epochs=epochs, batch_size=64, gates=GATES)
    return fit(model, state, data, optimizer=optimizer, config=config, registry=registry, controller=CONTROLLER, loop=loop)


def sweep_contributions(model: ef.Model, state: ef.TrainState, data: ef.data.Dataset) -> dict[str, object]:
    """Each slot's Shapley value of the validation accuracy, from one full-factorial sweep.

    Every coalition of slots (on at its own alpha, or off) is one row of the grid;
    ``ef.sweep`` evaluates them all at once, sharing every computation that does
    not depend on a row, and equals ``ef.predict`` row by row.
    """
    alphas = ef.alphas_of(model, state.seeds)
    coalitions = ef.alpha_grid("full_factorial", model.n_slots)  # [2**n, n] of 0/1
    grid = coalitions * alphas
    logits = ef.sweep(model, state.params, state.buffers, data.x_val, grid)  # [K, B, classes]
    accuracies = (logits.argmax(-1) == data.y_val).double().mean(-1)
    values = ef.shapley(coalitions, accuracies)
    everyone = ef.predict(model, state.params, state.buffers, alphas, data.x_val)
    return {
        "shapley": {sid: float(values.mean[model.index(sid)]) for sid in model.slot_order},
        "alphas": {sid: float(alphas[model.index(sid)]) for sid in model.slot_order},
        "sweep_matches_predict": bool(torch.allclose(logits[-1], everyone, atol=1e-5)),
    }


def same_run(a: FitResult, b: FitResult) -> bool:
    """Same structure, lifecycle states and parameters, bit for bit."""
    leaves_a = torch.utils._pytree.tree_leaves(a.state.params)
    leaves_b = torch.utils._pytree.tree_leaves(b.state.params)
    return (
        a.model == b.model
        and a.state.seeds == b.state.seeds
        and len(leaves_a) == len(leaves_b)
        and all(torch.equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True))
    )


def main(epochs: int = 12, resume_at: int = 6, directory: str = "runs/tabular_mlp") -> dict[str, object]:
    data = load_data()
    registry = make_registry()
    host = MLPHost(in_features=data.x_train.shape[1], num_classes=data.num_classes)
    optimizer = ef.optim.adamw(1e-2)

    model, state = start(host, optimizer)
    before = accuracy(model, state, data)
    full = train(model, state, data, registry, optimizer, epochs)

    # Stop after `resume_at` epochs and look at the seeds through a sweep; save,
    # load with the registry that knows MLPHost, and go on to `epochs`.
    model, state = start(host, optimizer)
    first = train(model, state, data, registry, optimizer, resume_at)
    sweep = sweep_contributions(first.model, first.state, data)
    save_run(directory, first.model, first.state, first.loop)
    model, state, loop = load_run(directory, registry=registry).restore(optimizer)
    resumed = train(model, state, data, registry, optimizer, epochs, loop=loop)

    events = [event for record in full.history for event in record.events]
    p = float(data.y_val.double().mean())
    return {
        "accuracy_before": before,
        "accuracy_after": accuracy(full.model, full.state, data),
        "majority_class": max(p, 1.0 - p),
        "germinated": sum(isinstance(e, ef.SeedGerminated) for e in events),
        "stages_reached": sorted({e.to_stage.name for e in events if isinstance(e, ef.StageChanged)}),
        "sweep_at_resume": sweep,
        "resumed_equals_uninterrupted": same_run(resumed, full),
    }


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}: {value}")
