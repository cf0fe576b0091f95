"""The epoch loop on any batch source, the language-model task, and its typed epoch records."""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import esper_func as ef
from esper_func.controller import Action, ActionKind, HeuristicConfig, heuristic
from esper_func.fit import FitConfig, LoopState, _validate_phase, fit, run_epoch
from esper_func.governor import Verdict
from esper_func.records import event_from_dict, event_to_dict
from esper_func.runs import load_run, save_run
from esper_func.train import LocalReducer, init_train_state

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")
LM_HOST = ef.TransformerHost(vocab_size=256, n_embd=16, n_head=2, n_layer=2, block_size=16, dropout=0.0, num_segments=2)
FAST = heuristic(HeuristicConfig(stabilization_epochs=0, min_epochs_before_germinate=2, plateau_epochs_to_germinate=1, tempo=2))
GATES = ef.Gates(permissive=True, min_blending_epochs=1)
EPOCHS = 8


def wait(observation):
    return Action(kind=ActionKind.WAIT, reason="test")


@cache
def dataset():
    return ef.data.synthetic_images(240, classes=4, size=8, seed=0)


@cache
def corpus():
    return ef.data.load_stdlib_text()


def fresh(host=HOST, key: int = 7, lr: float = 1e-2):
    optimizer = ef.optim.adamw(lr)
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    return optimizer, model, init_train_state(model, params, buffers, optimizer=optimizer, key=key)


def config(epochs: int, **kwargs) -> FitConfig:
    return FitConfig(epochs=epochs, batch_size=32, gates=GATES, **kwargs)


def leaves_equal(a, b) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    return len(la) == len(lb) and all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(la, lb, strict=True)
    )


def loaders():
    """The Dataset's batches through map-style DataLoaders (the epoch set through the batch sampler)."""
    data = dataset()
    train = data.train_batches(32, seed=0)
    val = data.val_batches(512)
    return (DataLoader(train.items, batch_sampler=ef.data.EpochBatchSampler(train)),
            DataLoader(val.items, batch_sampler=ef.data.EpochBatchSampler(val)))


@cache
def in_memory():
    optimizer, model, state = fresh()
    return fit(model, state, dataset(), optimizer=optimizer, config=config(EPOCHS), registry=ef.default_registry(),
               controller=FAST)


@cache
def through_dataloaders():
    optimizer, model, state = fresh()
    seen: list[ef.EpochRecord] = []
    train, val = loaders()
    result = fit(model, state, train, val=val, optimizer=optimizer, config=config(EPOCHS),
                 registry=ef.default_registry(), controller=FAST, on_epoch=seen.append)
    return result, seen


def assert_same_training(a: ef.fit.FitResult, b: ef.fit.FitResult) -> None:
    assert a.model == b.model
    assert leaves_equal(a.state.params, b.state.params) and leaves_equal(a.state.buffers, b.state.buffers)
    assert leaves_equal(a.state.opt_state, b.state.opt_state)
    assert a.state.seeds == b.state.seeds and a.state.step == b.state.step
    assert a.history == b.history


# --------------------------------------------------------------------------- batch sources


def test_a_dataloader_over_the_same_tensors_trains_bitwise_like_the_in_memory_dataset():
    result, _ = through_dataloaders()
    assert_same_training(result, in_memory())
    assert any(r.events for r in result.history)  # the lifecycle ran, not only the steps


def test_esper_func_batches_as_the_source_train_bitwise_like_the_in_memory_dataset():
    data = dataset()
    optimizer, model, state = fresh()
    result = fit(model, state, data.train_batches(32, seed=0), val=data.val_batches(512), optimizer=optimizer,
                 config=config(EPOCHS), registry=ef.default_registry(), controller=FAST)
    assert_same_training(result, in_memory())


def test_on_epoch_is_called_once_per_epoch_with_the_records_returned():
    result, seen = through_dataloaders()
    assert len(seen) == EPOCHS == len(result.history)
    assert all(a is b for a, b in zip(seen, result.history, strict=True))
    assert [r.epoch for r in seen] == list(range(1, EPOCHS + 1))


def test_resuming_a_dataloader_run_equals_the_uninterrupted_run(tmp_path: Path):
    optimizer, model, state = fresh()
    train, val = loaders()
    first = fit(model, state, train, val=val, optimizer=optimizer, config=config(3), registry=ef.default_registry(),
                controller=FAST)
    save_run(tmp_path, first.model, first.state, first.loop)
    model, state, loop = load_run(tmp_path, registry=ef.default_registry()).restore(optimizer)
    train, val = loaders()  # a fresh process: new loaders, told the epoch by the loop
    rest = fit(model, state, train, val=val, optimizer=optimizer, config=config(EPOCHS), registry=ef.default_registry(),
               controller=FAST, loop=loop)
    assert_same_training(rest, through_dataloaders()[0])


def test_a_plain_list_of_batches_trains_and_validation_can_override_a_datasets():
    data = dataset()
    optimizer, model, state = fresh()
    batches = [(data.x_train[i : i + 48], data.y_train[i : i + 48]) for i in range(0, 192, 48)]
    val = [(data.x_val, data.y_val)]
    _, after, loop, record = run_epoch(model, state, LoopState(), batches, val=val, optimizer=optimizer,
                                       config=config(1), registry=ef.default_registry(), controller=wait)
    assert after.step == 4 and record.step == 4 and loop.records == (record,)
    _, _, _, again = run_epoch(model, state, LoopState(), data, val=val, optimizer=optimizer,
                               config=FitConfig(epochs=1, batch_size=48, gates=GATES), registry=ef.default_registry(),
                               controller=wait)
    assert again.val_loss == pytest.approx(record.val_loss, rel=0.5)  # same validation set, other training order
    assert 0.0 <= record.val_accuracy <= 1.0 and 0.0 <= record.train_accuracy <= 1.0


# --------------------------------------------------------------------------- language modelling


def lm_sources():
    text = corpus()
    train = text.train_batches(16, 16, seed=0, steps=12)
    # 1001 tokens: 63 windows of 16, the last one padded (IGNORE_INDEX targets); 1000 targets in all.
    val = ef.data.TokenBatches(text.val[:1001], 32, 16)
    return train, val


def lm_reference(model, state, val) -> tuple[float, float, int]:
    """Validation loss and token accuracy computed by hand with ef.predict."""
    alphas = ef.alphas_of(model, state.seeds)
    nats, hits, count = 0.0, 0, 0
    for x, y in val:
        logits = ef.predict(model, state.params, state.buffers, alphas, x).flatten(0, 1).double()
        targets = y.flatten()
        keep = targets != ef.data.IGNORE_INDEX
        nats += float(F.cross_entropy(logits, targets, reduction="sum"))
        hits += int((logits.argmax(-1) == targets)[keep].sum())
        count += int(keep.sum())
    return nats / count, hits / count, count


def test_a_transformer_language_model_trains_on_token_batches_and_reports_bits_per_character():
    optimizer, model, state = fresh(LM_HOST, key=0, lr=1e-2)
    train, val = lm_sources()
    result = fit(model, state, train, val=val, optimizer=optimizer, config=config(3, task="language_model"),
                 registry=ef.default_registry(), controller=wait)
    losses = [r.val_loss for r in result.history]
    assert losses[-1] < losses[0] < math.log(256)  # better than uniform over bytes, and improving
    for record in result.history:
        assert record.task == "language_model"
        assert record.val_bits_per_token == record.val_loss / math.log(2)
        assert 0.0 < record.val_accuracy < 1.0 and 0.0 < record.train_accuracy < 1.0
        assert record.params == sum(t.numel() for t in torch.utils._pytree.tree_leaves(result.state.params))
    loss, accuracy, count = lm_reference(result.model, result.state, val)
    assert count == 1000  # the padded targets are not counted
    assert result.history[-1].val_loss == pytest.approx(loss, rel=1e-5)
    assert result.history[-1].val_accuracy == pytest.approx(accuracy, abs=1e-12)
    line = result.history[-1].to_dict()
    assert line["val_bits_per_token"] == pytest.approx(loss / math.log(2), rel=1e-5) and line["task"] == "language_model"


def test_language_model_contributions_are_token_accuracy_with_minus_without_each_blended_seed():
    _, model, state = fresh(LM_HOST, key=0)
    registry = ef.default_registry()
    seeds = {}
    for sid, alpha in (("r0c0", 0.5), ("r0c1", 1.0)):
        model, params = ef.add_seed(model, state.params, sid, registry, "mlp_small", stage=ef.SeedStage.BLENDING,
                                    generator=torch.Generator().manual_seed(1))
        state = dataclasses.replace(state, params=params)
        seeds[sid] = dataclasses.replace(
            ef.germinate(sid, "mlp_small", topology="transformer"), stage=ef.SeedStage.BLENDING,
            alpha_controller=ef.AlphaController(alpha=alpha),
        )
    state = dataclasses.replace(state, seeds=seeds)
    _, val = lm_sources()
    val_loss, val_accuracy, contributions = _validate_phase(
        model, state, val, config=config(1, task="language_model"), loss_fn=F.cross_entropy, reducer=LocalReducer()
    )
    loss, accuracy, _ = lm_reference(model, state, val)
    assert val_loss == pytest.approx(loss, rel=1e-5) and val_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert set(contributions) == {"r0c0", "r0c1"}
    for sid in contributions:
        off = dataclasses.replace(state, seeds={**seeds, sid: dataclasses.replace(seeds[sid], alpha_controller=ef.AlphaController(alpha=0.0))})
        _, without, _ = lm_reference(model, off, val)
        assert contributions[sid] == pytest.approx(100.0 * (accuracy - without), abs=1e-9)


# --------------------------------------------------------------------------- bad input


def one_epoch(data, *, host=HOST, val=None, **kwargs):
    optimizer, model, state = fresh(host)
    return run_epoch(model, state, LoopState(), data, val=val, optimizer=optimizer, config=config(1, **kwargs),
                     registry=ef.default_registry(), controller=wait)


def test_bad_sources_and_batches_raise_clear_errors():
    data = dataset()
    x, y = data.x_train[:8], data.y_train[:8]
    val = [(data.x_val, data.y_val)]
    cases = [
        (lambda: one_epoch([(x, y, y)], val=val), ef.InvalidTypeError, "must be a pair"),
        (lambda: one_epoch([x], val=val), ef.InvalidTypeError, "not of batches"),
        (lambda: one_epoch((x, y), val=val), ef.InvalidTypeError, "TensorBatches"),
        (lambda: one_epoch([(x, [1, 2])], val=val), ef.InvalidTypeError, "pair of tensors"),
        (lambda: one_epoch(iter([(x, y)]), val=val), ef.InvalidTypeError, "one-shot iterator"),
        (lambda: one_epoch(42, val=val), ef.InvalidTypeError, "re-iterable"),
        (lambda: one_epoch(data, val=data), ef.InvalidTypeError, "val must be a re-iterable"),
        (lambda: one_epoch([(x, y[:, None])], val=val), ef.ShapeError, "targets \\[B\\]"),
        (lambda: one_epoch([(x, y.float())], val=val), ef.DTypeError, "integer"),
        (lambda: one_epoch([(x, y)], val=[(data.x_val, data.y_val[:3])]), ef.ShapeError, "validation batch 0"),
        (lambda: one_epoch([], val=val), ef.InvalidArgumentError, "no training batch"),
        (lambda: one_epoch([(x, y)], val=[]), ef.InvalidArgumentError, "validation set is empty"),
        (lambda: one_epoch([(x, y)]), ef.InvalidArgumentError, "needs validation batches"),
        (lambda: one_epoch(data, task="language_model"), ef.InvalidArgumentError, "TransformerHost"),
        (lambda: FitConfig(epochs=1, task="regression"), ef.InvalidArgumentError, "task must be one of"),
    ]
    tokens = torch.randint(0, 256, (4, 16))
    cases += [
        (lambda: one_epoch([(tokens, tokens)], host=LM_HOST, val=[(tokens, tokens)]), ef.InvalidArgumentError,
         "task='language_model'"),
        (lambda: one_epoch([(tokens, tokens[:, 0])], host=LM_HOST, val=[(tokens, tokens)], task="language_model"),
         ef.ShapeError, "use FitConfig\\(task='classification'\\)"),
        (lambda: one_epoch([(tokens.float(), tokens)], host=LM_HOST, val=[(tokens, tokens)], task="language_model"),
         ef.DTypeError, "integer token inputs"),
    ]
    for call, error, needle in cases:
        with pytest.raises(error, match=needle) as info:
            call()
        assert isinstance(info.value, ef.EsperFuncError)


def test_a_dataloader_fixed_to_one_epoch_of_esper_func_batches_is_refused():
    data = dataset()
    loader = DataLoader(data.train_batches(32, seed=0), batch_size=None)
    with pytest.raises(ef.InvalidArgumentError, match="fixed to one epoch"):
        one_epoch(loader, val=[(data.x_val, data.y_val)])


# --------------------------------------------------------------------------- records


def test_records_are_frozen_and_round_trip_through_json():
    result, _ = through_dataloaders()
    for record in result.history:
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.val_loss = 0.0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.slots[0].alpha = 0.5  # type: ignore[misc]
        line = json.dumps(record.to_dict(), sort_keys=True, allow_nan=False)
        back = ef.EpochRecord.from_dict(json.loads(line))
        assert back == record and back.to_dict() == record.to_dict() and back.seconds == record.seconds
        assert hash(back) == hash(record)
        assert record.to_dict()["contributions"] == record.contributions
    assert [s.stage for s in result.history[-1].slots] == list(result.model.stages)
    kinds = {type(e).__name__ for r in result.history for e in r.events}
    assert {"SeedGerminated", "StageChanged"} <= kinds


def test_records_of_a_run_checkpoint_come_back_typed(tmp_path: Path):
    result = in_memory()
    save_run(tmp_path, result.model, result.state, result.loop)
    _, _, loop = load_run(tmp_path, registry=ef.default_registry()).restore(None)
    assert loop.records == result.history and all(isinstance(r, ef.EpochRecord) for r in loop.records)
    assert [r.seconds for r in loop.records] == [r.seconds for r in result.history]


def test_from_dict_refuses_malformed_records_and_reads_older_ones():
    line = in_memory().history[-1].to_dict()
    older = {k: v for k, v in line.items() if k not in ("task", "val_bits_per_token", "params", "seconds")}
    old = ef.EpochRecord.from_dict(older)
    assert old.task == "classification" and old.params is None and old.seconds is None and old.val_loss == line["val_loss"]
    bad = [
        ({**line, "val_accuracy": 57.5}, ef.InvalidArgumentError, "fraction"),
        ({**line, "colour": 1}, ef.InvalidArgumentError, "unknown key"),
        ({k: v for k, v in line.items() if k != "val_loss"}, ef.InvalidArgumentError, "missing key"),
        ({**line, "epoch": "one"}, ef.InvalidTypeError, "epoch"),
        ({**line, "slots": {"r0c0": {**line["slots"]["r0c0"], "stage": "GROWING"}}}, ef.InvalidArgumentError, "SeedStage"),
        ({**line, "contributions": {"r0c0": 12.5}}, ef.InvalidArgumentError, "disagree"),
        ({**line, "val_bits_per_token": 1.0}, ef.InvalidArgumentError, "language_model"),
        ({**line, "events": [{"type": "Exploded"}]}, ef.InvalidArgumentError, "lifecycle event"),
        ([1, 2], ef.InvalidTypeError, "JSON object"),
    ]
    for data, error, needle in bad:
        with pytest.raises(error, match=needle):
            ef.EpochRecord.from_dict(data)


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
fractions = st.one_of(st.floats(0.0, 1.0), st.just(math.nan))
slot_records = st.builds(
    ef.SlotRecord,
    slot_id=st.sampled_from(["r0c0", "r0c1", "r1c0"]),
    stage=st.sampled_from(list(ef.SeedStage)),
    alpha=st.floats(0.0, 1.0),
    blueprint=st.one_of(st.none(), st.sampled_from(["norm", "conv_light", "lora"])),
    contribution=st.one_of(st.none(), floats),
)


@st.composite
def epoch_records(draw):
    task = draw(st.sampled_from(["classification", "language_model"]))
    val_loss = draw(floats)
    slots = draw(st.lists(slot_records, max_size=3, unique_by=lambda s: s.slot_id))
    events = draw(st.lists(st.sampled_from([e for r in in_memory().history for e in r.events]), max_size=4))
    action = draw(st.one_of(st.none(), st.builds(
        ef.ActionRecord, kind=st.sampled_from(list(ActionKind)), slot_id=st.sampled_from(["r0c0", None]),
        blueprint=st.sampled_from(["norm", None]), reason=st.text(max_size=8),
    )))
    return ef.EpochRecord(
        epoch=draw(st.integers(0, 10**6)), step=draw(st.integers(0, 10**9)), task=task,
        train_loss=draw(floats), train_accuracy=draw(fractions), val_loss=val_loss, val_accuracy=draw(fractions),
        val_bits_per_token=val_loss / math.log(2) if task == "language_model" else None,
        params=draw(st.one_of(st.none(), st.integers(0, 10**9))), seconds=draw(st.one_of(st.none(), st.floats(0, 1e6))),
        slots=tuple(slots), action=action, verdict=draw(st.sampled_from(list(Verdict))),
        verdict_reason=draw(st.text(max_size=8)), events=tuple(events),
    )


@given(epoch_records())
def test_any_record_round_trips_through_strict_json(record):
    line = json.dumps(record.to_dict(), allow_nan=False)
    back = ef.EpochRecord.from_dict(json.loads(line))
    assert back == record and back.to_dict() == record.to_dict() and hash(back) == hash(record)
    assert dataclasses.replace(record, seconds=None) == record  # wall-clock time is not part of equality


@given(st.data(), st.integers(0, 100))
def test_events_round_trip(data, epoch):
    event = data.draw(st.sampled_from([e for r in in_memory().history for e in r.events]))
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event, epoch)))) == (event, epoch)


def test_run_checkpoints_keep_the_rollback_count_and_the_pending_snapshot(tmp_path: Path):
    result = in_memory()
    loop = dataclasses.replace(result.loop, consecutive_rollbacks=2, fossilized_since_snapshot=True)
    path = save_run(tmp_path, result.model, result.state, loop)
    _, _, back = load_run(tmp_path, registry=ef.default_registry()).restore(None)
    assert (back.consecutive_rollbacks, back.fossilized_since_snapshot) == (2, True)
    tensors, meta = ef.checkpoint.load_checkpoint(path)
    for key in ("consecutive_rollbacks", "fossilized_since_snapshot"):  # a checkpoint written before they were kept
        del meta["loop"][key]
    ef.checkpoint.save_checkpoint(tmp_path / "older", tensors=tensors, meta=meta)
    _, _, older = load_run(tmp_path / "older", registry=ef.default_registry()).restore(None)
    assert (older.consecutive_rollbacks, older.fossilized_since_snapshot) == (0, False)
    assert older.records == result.history
