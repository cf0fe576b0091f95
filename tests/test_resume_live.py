"""Resuming a run saved while a seed is mid-BLENDING ends bitwise like the uninterrupted run.

For each blend algorithm (ADD, MULTIPLY, GATE) a seed is germinated at the
first decision, trained, and caught blending with alpha strictly between 0.3
and 1; the run is saved there, loaded back, and continued for several
epochs. Weights, buffers, optimizer state, seed states, model structure and
the epoch records must equal a run that was never interrupted. The seed must
really change the model's output at the save point, so the test cannot pass
on a seed that is the identity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _live_run import dataset, germinate_once, leaves_equal, start

import esper_func as ef
from esper_func.fit import FitConfig, LoopState, fit, run_epoch
from esper_func.runs import load_run, save_run

# A MULTIPLY conv_light seed in TRAINING has some gradient tensors below the vanishing threshold
# (health 0.5, as esper-lite measures it), which the default permissive G2 (0.7) would hold back.
GATES = ef.Gates(permissive=True, min_blending_epochs=1, min_gradient_health_for_blending=0.4)
TOTAL_EPOCHS = 12


def config() -> FitConfig:
    return FitConfig(epochs=TOTAL_EPOCHS, batch_size=32, gates=GATES)


# MULTIPLY zero-initialises a seed's final layer (as esper-lite does); conv_light's final layer is a
# conv followed by GroupNorm and ReLU, so its gradient is exactly zero and it never leaves the identity.
# bottleneck's final projection learns.
@pytest.mark.parametrize(
    ("algorithm", "blueprint"),
    [(ef.AlphaAlgorithm.ADD, "conv_light"), (ef.AlphaAlgorithm.MULTIPLY, "bottleneck"), (ef.AlphaAlgorithm.GATE, "conv_light")],
    ids=["ADD", "MULTIPLY", "GATE"],
)
def test_resume_mid_blending_equals_the_uninterrupted_run(algorithm: ef.AlphaAlgorithm, blueprint: str, tmp_path: Path) -> None:
    registry = ef.default_registry()
    controller = germinate_once(algorithm, blueprint)
    optimizer = ef.optim.adamw(1e-2)

    full = fit(*start(optimizer), dataset(), optimizer=optimizer, config=config(), registry=registry, controller=controller)

    # the interrupted run: epoch by epoch until the seed has trained blended in (alpha > 0) for an epoch
    # and is still blending (a MULTIPLY seed learns nothing while its alpha is 0)
    model, state = start(optimizer)
    loop = LoopState()
    while True:
        model, state, loop, _ = run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(),
                                          registry=registry, controller=controller)
        seed = state.seeds.get("r0c0")
        if seed is not None and seed.stage == ef.SeedStage.BLENDING and 0.3 < seed.alpha < 1.0:
            break
        assert loop.epoch < TOTAL_EPOCHS - 2, "the seed never reached mid-blending early enough to resume"
    assert seed.alpha_algorithm == algorithm
    assert model.slot("r0c0") is not None and model.slot("r0c0").algorithm == algorithm

    # not vacuous: the blended seed changes the output
    x = dataset().x_val[:16]
    with_seed = ef.predict(model, state.params, state.buffers, ef.alphas_of(model, state.seeds), x)
    without = ef.predict(model, state.params, state.buffers, torch.zeros(model.n_slots), x)
    assert not torch.equal(with_seed, without)

    save_run(tmp_path, model, state, loop)
    model, state, loop = load_run(tmp_path, registry=registry).restore(optimizer)
    assert state.seeds["r0c0"].stage == ef.SeedStage.BLENDING
    rest = fit(model, state, dataset(), optimizer=optimizer, config=config(), registry=registry,
               controller=controller, loop=loop)

    assert rest.loop.epoch == full.loop.epoch == TOTAL_EPOCHS
    assert rest.model == full.model
    assert leaves_equal(rest.state.params, full.state.params)
    assert leaves_equal(rest.state.buffers, full.state.buffers)
    assert leaves_equal(rest.state.opt_state, full.state.opt_state)
    assert rest.state.seeds == full.state.seeds and rest.state.step == full.state.step
    assert rest.loop.records == full.loop.records
    # the seed lived through the resume and reached its decision after it
    assert full.state.seeds["r0c0"].stage == ef.SeedStage.FOSSILIZED
