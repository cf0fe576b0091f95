"""A seed tournament: four candidates incubated together in one slot, then the best one kept."""

import dataclasses

import torch
import torch.nn.functional as F

import esper_func as ef

registry = ef.default_registry()
host = ef.CNNHost(n_blocks=2, base_channels=8)
model, params, buffers = ef.build_model(host, ["r0c0", "r1c0"], generator=torch.Generator().manual_seed(0))

# Four candidates in r0c0: mixed blueprints, one of them twice.
blueprints = ["conv_light", "norm", "conv_light", "depthwise"]
generators = [torch.Generator().manual_seed(i) for i in range(len(blueprints))]
model, params = ef.add_candidates(model, params, "r0c0", registry, blueprints, generators=generators)

# The slot's lifecycle state: one seed in TRAINING (the incubator) stands for the group.
state = ef.germinate("r0c0", "candidates", topology="cnn")
state, _, _ = ef.advance(state, ef.Gates(permissive=True), ef.SeedStage.TRAINING)
seeds = {"r0c0": state}

# Train as usual: the host trains as with r0c0 empty, each candidate as it would alone.
optimizer = ef.optim.adam(1e-2)
g = torch.Generator().manual_seed(1)
batches = [(torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]
train = ef.init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
for batch in batches:
    train, metrics = ef.train_step(model, train, batch, optimizer=optimizer, loss_fn=F.cross_entropy)

# Each candidate, in a single seed's layout.
candidates = ef.candidate_params(model, train.params, "r0c0")
assert len(candidates) == 4 and set(candidates[1]) == {"seed"}

# Score them blended in on validation data and keep the winner as an ordinary seed.
val = [(torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g))]
new_model, new_params, new_seeds, events = ef.select_candidate(
    model, train.params, train.buffers, seeds, "r0c0", val,
    gates=ef.Gates(permissive=True), loss_fn=F.cross_entropy,
)
(decided,) = events
winner = decided.winner
print(f"kept candidate {winner} ({decided.blueprint_id}): {decided.reason}")
for name, contribution, passed in zip(decided.candidates, decided.contributions, decided.gate_passed):
    print(f"  {name:12s} contribution {contribution:+.2f} pp  G2 {'pass' if passed else 'not yet'}")

# Continue training the winner with its own optimizer moments.
opt_state = type(train.opt_state)(
    *(ef.keep_candidate_tree(model, getattr(train.opt_state, f.name), "r0c0", winner)
      for f in dataclasses.fields(train.opt_state))
)
train = ef.TrainState(new_params, train.buffers, opt_state, new_seeds, train.step)
train, _ = ef.train_step(new_model, train, batches[0], optimizer=optimizer, loss_fn=F.cross_entropy)
assert new_model.slot("r0c0").blueprint_id == blueprints[winner]
