"""The lifecycle scenarios behind the recorded esper-lite checkpoints (pure data, no esper-lite import).

Each :class:`Scenario` is one model: a host with constructor arguments, the
enabled slots, and per slot a timeline of lifecycle actions at given epochs.
Two drivers replay the same timelines:

- ``tools/record_esper_lite_checkpoints.py`` through esper-lite 2016337e's own
  ``MorphogeneticModel`` / ``SeedSlot`` API, and
- ``tools/write_esper_func_checkpoints.py`` through esper_func's pure
  lifecycle functions.

Both run the same loop, epoch ``e = 0 .. epochs``:

1. the actions scheduled for epoch ``e``, in the order listed;
2. ``TRAIN_STEPS`` SGD steps on fresh random batches in training mode, with
   gradient telemetry measured after each backward for the slots that ask
   for it (``gradient_ratio``: the host/seed gradient-norm ratio that strict
   gate G2 reads; ``gradient_health``: the health, vanishing and exploding
   telemetry that permissive G2 reads);
3. for ``e < epochs`` only: validation accuracy recorded for every live seed,
   counterfactual contribution (accuracy minus accuracy with the seed's
   alpha forced to 0) for seeds in BLENDING, HOLDING or FOSSILIZED, telemetry
   synced, and one ``step_epoch`` for every slot.

The model is saved right after the training steps of epoch ``epochs``.
Every action must be accepted (an advance must pass its gate) and every
slot must end in ``expect_stage``; a driver fails loudly otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EVAL_BATCH",
    "LEARNING_RATE",
    "TRAIN_BATCH",
    "TRAIN_STEPS",
    "Action",
    "Scenario",
    "SlotPlan",
    "SCENARIOS",
    "loss_fn",
    "make_batch",
    "output_inputs",
    "scenario",
]

#: SGD steps per epoch (and after the final epoch's actions).
TRAIN_STEPS: Final[int] = 8
#: Training batch size.
TRAIN_BATCH: Final[int] = 32
#: Validation batch size (accuracy and counterfactual contribution).
EVAL_BATCH: Final[int] = 128
#: Plain SGD (no momentum, so the optimizer has no state to save), per topology.
LEARNING_RATE: Final[dict[str, float]] = {"cnn": 0.1, "transformer": 0.05}

#: Inputs saved with each checkpoint: batch size per topology.
OUTPUT_BATCH: Final[dict[str, int]] = {"cnn": 8, "transformer": 4}
#: Image side for CNN hosts.
IMAGE_SIZE: Final[int] = 16


@dataclass(frozen=True)
class Action:
    """One lifecycle request at the start of ``epoch``.

    ``op`` is one of ``germinate`` (args: ``blueprint``, ``algorithm``,
    ``blend``, ``tempo``), ``advance`` (``target``: a stage name), ``prune``
    (``reason``), ``schedule_prune`` (``steps``, ``curve``) or
    ``set_alpha_target`` (``alpha_target``, ``steps``, ``curve``,
    ``algorithm``). Enum values are given by name.
    """

    epoch: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {"epoch": self.epoch, "op": self.op, **self.args}


@dataclass(frozen=True)
class SlotPlan:
    """What happens in one slot, and the stage it must end in."""

    slot: str
    expect_stage: str
    actions: tuple[Action, ...] = ()
    gradient_ratio: bool = False
    gradient_health: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {
            "expect_stage": self.expect_stage,
            "gradient_ratio": self.gradient_ratio,
            "gradient_health": self.gradient_health,
            "actions": [a.to_json() for a in self.actions],
        }


@dataclass(frozen=True)
class Scenario:
    """One checkpoint: host, enabled slots, gates and per-slot timelines."""

    name: str
    topology: str
    host_kwargs: dict[str, Any]
    slots: tuple[str, ...]
    plans: tuple[SlotPlan, ...]
    epochs: int
    seed: int
    permissive_gates: bool = True
    description: str = ""

    def plan(self, slot: str) -> SlotPlan | None:
        """The plan of ``slot``, or ``None`` for a slot left empty."""
        for p in self.plans:
            if p.slot == slot:
                return p
        return None

    def actions_at(self, epoch: int) -> list[tuple[str, Action]]:
        """``(slot, action)`` pairs scheduled for ``epoch``, in slot order then listing order."""
        out: list[tuple[str, Action]] = []
        for slot in self.slots:
            p = self.plan(slot)
            if p is not None:
                out.extend((slot, a) for a in p.actions if a.epoch == epoch)
        return out


# --------------------------------------------------------------------------- action helpers


def germ(epoch: int, blueprint: str, algorithm: str = "ADD", *, blend: str | None = None, tempo: int = 3) -> Action:
    """Germinate ``blueprint``; GATE uses the ``gated`` blend, others ``sigmoid`` unless given."""
    if blend is None:
        blend = "gated" if algorithm == "GATE" else "sigmoid"
    return Action(epoch, "germinate", {"blueprint": blueprint, "algorithm": algorithm, "blend": blend, "tempo": tempo})


def adv(epoch: int, target: str) -> Action:
    """Advance to ``target``; its gate must pass."""
    return Action(epoch, "advance", {"target": target})


def prune(epoch: int, reason: str = "policy_prune") -> Action:
    """Prune at once."""
    return Action(epoch, "prune", {"reason": reason})


def schedule_prune(epoch: int, steps: int, curve: str | None = "LINEAR") -> Action:
    """Ramp alpha down to 0 over ``steps`` epochs, then prune."""
    return Action(epoch, "schedule_prune", {"steps": steps, "curve": curve})


def retarget(epoch: int, alpha_target: float, steps: int, *, algorithm: str | None = None, curve: str | None = None) -> Action:
    """``set_alpha_target``, optionally switching the alpha algorithm."""
    return Action(
        epoch, "set_alpha_target", {"alpha_target": alpha_target, "steps": steps, "curve": curve, "algorithm": algorithm}
    )


def grow(start: int, blueprint: str, algorithm: str = "ADD", *, blend: str | None = None, tempo: int = 3) -> tuple[Action, ...]:
    """Germinate at ``start`` and go straight to TRAINING."""
    return (germ(start, blueprint, algorithm, blend=blend, tempo=tempo), adv(start, "TRAINING"))


def live(slot: str, expect: str, actions: tuple[Action, ...], *, ratio: bool = True, health: bool = True) -> SlotPlan:
    """A slot plan; gradient telemetry measured by default."""
    return SlotPlan(slot, expect, actions, gradient_ratio=ratio, gradient_health=health)


# --------------------------------------------------------------------------- hosts

CNN_HOST: Final[dict[str, Any]] = {"num_classes": 10, "n_blocks": 3, "base_channels": 8}
CNN_SLOTS: Final[tuple[str, ...]] = ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2")
TRANSFORMER_HOST: Final[dict[str, Any]] = {
    "vocab_size": 64,
    "n_embd": 32,
    "n_head": 2,
    "n_layer": 3,
    "block_size": 16,
    "dropout": 0.1,
    "num_segments": 3,
}
TRANSFORMER_SLOTS: Final[tuple[str, ...]] = ("r0c0", "r0c1", "r0c2")

# MULTIPLY zero-initialises a blueprint's last conv/linear layer. For cnn
# conv_light, conv_heavy, conv_small and depthwise that layer feeds GroupNorm and ReLU,
# which then output exactly 0 with zero gradient: such a seed never trains in
# esper-lite. MULTIPLY seeds here use blueprints that do train (norm,
# attention, bottleneck; every transformer blueprint), or were germinated with
# another algorithm and switched to MULTIPLY while holding. cnn conv_small
# zero-initialises that conv itself, so it never trains with any algorithm
# (its measured gradient health is 0.5, below permissive G2's 0.7); it only
# appears as a seed pruned from TRAINING.
#
# A CNN seed blending with isolation (the default from BLENDING on) reads the
# detached host, so at alpha 1 nothing upstream of it gets gradients any
# more; seeds that still have to train sit downstream of such seeds.
#
# In these small transformers the seeds in the last slot (r0c2, right before
# the final LayerNorm) see per-tensor gradient norms above esper-lite's
# exploding threshold (10) after a few epochs, so permissive G2 refuses
# them; seeds that blend sit in r0c0 and r0c1.
#
# With permissive gates (esper-lite's RL setting) a seed germinated at epoch g
# and measured can blend at g+10 (ten epochs in TRAINING), reaches alpha 1
# after `tempo` epochs of blending, then holds and fossilizes. A prune at
# epoch p gives EMBARGOED from p+1, RESETTING from p+6 and an empty slot
# (DORMANT, seed_state None) from p+7.

SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario(
        name="cnn_live",
        topology="cnn",
        host_kwargs=CNN_HOST,
        slots=CNN_SLOTS,
        epochs=16,
        seed=101,
        description="Live seeds in every forward stage; an empty slot and an ungated GATE seed.",
        plans=(
            live("r0c0", "FOSSILIZED", (*grow(0, "norm", tempo=3), adv(10, "BLENDING"), adv(13, "HOLDING"), adv(14, "FOSSILIZED"))),
            live("r0c1", "BLENDING", (*grow(3, "attention", "GATE", tempo=4), adv(13, "BLENDING"))),
            live("r0c2", "GERMINATED", (germ(10, "conv_light", "GATE"),), ratio=False, health=False),
            live("r1c0", "HOLDING", (*grow(0, "bottleneck", "MULTIPLY", blend="linear"), adv(10, "BLENDING"), adv(13, "HOLDING"))),
            live("r1c1", "TRAINING", grow(5, "depthwise"), ratio=False, health=False),
        ),
    ),
    Scenario(
        name="cnn_cooldown",
        topology="cnn",
        host_kwargs=CNN_HOST,
        slots=CNN_SLOTS,
        epochs=20,
        seed=102,
        description="The prune cooldown (PRUNED, EMBARGOED, RESETTING, back to an empty slot) next to live seeds.",
        plans=(
            live("r0c0", "PRUNED", (*grow(4, "conv_small", tempo=5), prune(20))),
            live("r0c1", "RESETTING", (*grow(0, "conv_light", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), prune(14))),
            live("r0c2", "BLENDING", (*grow(7, "attention", "MULTIPLY", tempo=5), adv(17, "BLENDING"))),
            live("r1c0", "EMBARGOED", (*grow(0, "norm", "MULTIPLY", blend="linear"), prune(17)), ratio=False, health=False),
            live("r1c1", "DORMANT", (*grow(0, "depthwise"), prune(6))),
            live("r1c2", "FOSSILIZED", (*grow(0, "bottleneck", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), adv(14, "FOSSILIZED"))),
        ),
    ),
    Scenario(
        name="cnn_switch",
        topology="cnn",
        host_kwargs=CNN_HOST,
        slots=CNN_SLOTS,
        epochs=20,
        seed=103,
        description=(
            "Alpha algorithm switched while holding (ADD->GATE creates a gate, GATE->MULTIPLY drops it, "
            "GATE->ADD with a partial target re-enters BLENDING ramping down); a scheduled prune ramping down; "
            "MULTIPLY and GATE seeds in TRAINING."
        ),
        plans=(
            live("r0c0", "HOLDING", (*grow(0, "norm"), adv(10, "BLENDING"), adv(13, "HOLDING"), retarget(16, 1.0, 3, algorithm="GATE"))),
            live(
                "r0c1",
                "BLENDING",
                (*grow(0, "depthwise", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), retarget(18, 0.6, 4, algorithm="ADD")),
            ),
            live("r0c2", "TRAINING", grow(8, "bottleneck", "MULTIPLY", blend="linear")),
            live("r1c0", "HOLDING", (*grow(0, "conv_heavy", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), retarget(16, 1.0, 3, algorithm="MULTIPLY"))),
            live("r1c1", "BLENDING", (*grow(0, "conv_light"), adv(10, "BLENDING"), adv(13, "HOLDING"), schedule_prune(17, 4))),
            live("r1c2", "TRAINING", grow(8, "attention", "GATE")),
        ),
    ),
    Scenario(
        name="cnn_strict",
        topology="cnn",
        host_kwargs=CNN_HOST,
        slots=("r0c0", "r0c1", "r1c1"),
        epochs=21,
        seed=104,
        permissive_gates=False,
        description=(
            "Strict gates, three enabled slots: seeds that blend and hold on the gradient ratio alone, "
            "their gradient-health telemetry never measured (None)."
        ),
        plans=(
            live("r0c0", "HOLDING", (*grow(0, "conv_light", tempo=3), adv(10, "BLENDING"), adv(20, "HOLDING")), health=False),
            live("r0c1", "BLENDING", (*grow(0, "norm", "MULTIPLY", blend="linear", tempo=4), adv(18, "BLENDING")), health=False),
            live("r1c1", "TRAINING", grow(0, "depthwise", "GATE"), health=False),
        ),
    ),
    Scenario(
        name="transformer_live",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=17,
        seed=201,
        description="Live transformer seeds: FOSSILIZED ADD, BLENDING GATE mid-ramp, a MULTIPLY seed in TRAINING.",
        plans=(
            live("r0c0", "FOSSILIZED", (*grow(0, "lora"), adv(10, "BLENDING"), adv(13, "HOLDING"), adv(14, "FOSSILIZED"))),
            live("r0c1", "BLENDING", (*grow(4, "attention", "GATE", tempo=4), adv(14, "BLENDING"))),
            live("r0c2", "TRAINING", grow(2, "mlp_small", "MULTIPLY", blend="linear")),
        ),
    ),
    Scenario(
        name="transformer_early",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=8,
        seed=202,
        description="Fresh transformer seeds with unmeasured telemetry, and an empty slot.",
        plans=(
            live("r0c0", "TRAINING", grow(0, "norm"), ratio=False, health=False),
            live("r0c1", "GERMINATED", (germ(3, "lora", "GATE"),), ratio=False, health=False),
        ),
    ),
    Scenario(
        name="transformer_cooldown",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=20,
        seed=203,
        description="Transformer prune cooldown: PRUNED (a GATE seed), RESETTING, EMBARGOED.",
        plans=(
            live("r0c0", "PRUNED", (*grow(0, "mlp_small", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), prune(20))),
            live("r0c1", "RESETTING", (*grow(0, "lora_large"), adv(10, "BLENDING"), prune(14))),
            live("r0c2", "EMBARGOED", (*grow(0, "norm", "MULTIPLY", blend="linear"), prune(17)), ratio=False, health=False),
        ),
    ),
    Scenario(
        name="transformer_switch",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=20,
        seed=204,
        description="Transformer algorithm switches while holding (ADD->GATE, GATE->ADD) and a slot emptied after a prune.",
        plans=(
            live("r0c0", "HOLDING", (*grow(0, "lora"), adv(10, "BLENDING"), adv(13, "HOLDING"), retarget(16, 1.0, 3, algorithm="GATE"))),
            live("r0c1", "HOLDING", (*grow(0, "attention", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), retarget(16, 1.0, 3, algorithm="ADD"))),
            live("r0c2", "DORMANT", (*grow(0, "mlp_small"), prune(2))),
        ),
    ),
    Scenario(
        name="transformer_fossil",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=16,
        seed=205,
        description="FOSSILIZED MULTIPLY and GATE transformer seeds; an ADD seed in TRAINING.",
        plans=(
            live("r0c0", "FOSSILIZED", (*grow(0, "mlp", "MULTIPLY", blend="linear"), adv(10, "BLENDING"), adv(13, "HOLDING"), adv(14, "FOSSILIZED"))),
            live("r0c1", "FOSSILIZED", (*grow(0, "attention", "GATE"), adv(10, "BLENDING"), adv(13, "HOLDING"), adv(14, "FOSSILIZED"))),
            live("r0c2", "TRAINING", grow(6, "lora")),
        ),
    ),
    Scenario(
        name="transformer_ramp",
        topology="transformer",
        host_kwargs=TRANSFORMER_HOST,
        slots=TRANSFORMER_SLOTS,
        epochs=20,
        seed=206,
        description="A HOLDING MULTIPLY transformer seed, a scheduled prune ramping an ADD seed down, a GATE seed in TRAINING.",
        plans=(
            live("r0c0", "HOLDING", (*grow(0, "mlp_small", "MULTIPLY", blend="linear"), adv(10, "BLENDING"), adv(13, "HOLDING"))),
            live("r0c1", "BLENDING", (*grow(0, "norm"), adv(10, "BLENDING"), adv(13, "HOLDING"), schedule_prune(18, 4))),
            live("r0c2", "TRAINING", grow(4, "mlp", "GATE"), ratio=False, health=False),
        ),
    ),
)


def scenario(name: str) -> Scenario:
    """The scenario called ``name``."""
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no scenario {name!r}; known: {[s.name for s in SCENARIOS]}")


# --------------------------------------------------------------------------- data


def _teacher(num_classes: int) -> Tensor:
    return torch.randn(3, 4, num_classes, generator=torch.Generator().manual_seed(12345))


def make_batch(scenario: Scenario, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random batch with learnable targets.

    CNN: ``N(0, 1)`` images; the class is the argmax of a fixed linear map of
    the four quadrant means of each channel. Transformer: random tokens; the
    target of token ``t`` is ``(5 t + 3) mod vocab_size``.
    """
    kw = scenario.host_kwargs
    if scenario.topology == "cnn":
        x = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        half = IMAGE_SIZE // 2
        quads = torch.stack(
            [x[:, :, :half, :half], x[:, :, :half, half:], x[:, :, half:, :half], x[:, :, half:, half:]], dim=2
        ).mean(dim=(3, 4))
        y = torch.einsum("bcq,cqk->bk", quads, _teacher(kw["num_classes"])).argmax(dim=1)
        return x, y
    x = torch.randint(0, kw["vocab_size"], (n, kw["block_size"]), generator=generator)
    return x, (5 * x + 3) % kw["vocab_size"]


def output_inputs(scenario: Scenario) -> Tensor:
    """The fixed inputs whose predictions are saved next to the checkpoint."""
    gen = torch.Generator().manual_seed(scenario.seed + 1000)
    return make_batch(scenario, OUTPUT_BATCH[scenario.topology], gen)[0]


def loss_fn(out: Tensor, y: Tensor) -> Tensor:
    """Cross entropy over classes (CNN) or tokens (transformer)."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
