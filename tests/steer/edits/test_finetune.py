"""Fine-tuning on edit examples: the target-only loss is the model's own loss, and training teaches an edit."""

from __future__ import annotations

import copy

import pytest
import torch

from steer.edits.compact import add_position_tokens
from steer.edits.finetune import encode_examples, finetune, heldout_loss, mix, target_loss
from steer.edits.generate import edit_generate
from steer.edits.make_data import make_examples
from tests.conftest import tiny_gpt2, tiny_llama


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_target_loss_is_the_models_loss(build):
    model = build()
    ids = torch.randint(3, 64, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # a right-padded row
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[0, 8:] = -100
    ours = target_loss(model, ids, mask, labels)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_encode_examples_masks_nothing_of_the_target(aidreams):
    _, tok = aidreams
    (p, t), = encode_examples(tok, [{"prompt": "Fix: a b", "completion": " c"}])
    assert p[0] == tok.bos_token_id and t[-1] == tok.eos_token_id
    assert t[:-1] == tok(" c", add_special_tokens=False)["input_ids"]
    (_, empty), = encode_examples(tok, [{"prompt": "x", "completion": ""}])
    assert empty == [tok.eos_token_id]  # no edits: EOS alone
    with pytest.raises(ValueError, match="'target'"):
        encode_examples(tok, [{"prompt": "x"}], target_key="target")


def test_finetune_teaches_a_compact_edit(aidreams):
    """A model trained on one edit writes it, through the compact grammar, and the loss falls."""
    model, tok = copy.deepcopy(aidreams[0]), copy.deepcopy(aidreams[1])
    add_position_tokens(tok, model, n_positions=16)
    pairs = [("the cat sat on on the mat", "the cat sat on the mat")]
    examples, _ = make_examples(pairs, "gec", tok, fmt="compact")
    run = finetune(model, tok, examples, steps=40, batch_size=2, lr=3e-3, warmup=0)
    assert len(run.losses) == 40 and run.losses[-1] < run.losses[0] / 4
    assert run.stopped == "steps" and run.best_step == 40 and run.heldout == []
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    (res,), _ = edit_generate(model, tok, [pairs[0][0]], task="gec", fmt="compact", max_new_tokens=8)
    assert res.valid and res.target == pairs[0][1]


def test_weights_pick_the_examples(aidreams):
    """Weight 0 never draws an example: training on [a, b] with weights [1, 0] is training on [a]."""
    _, tok = aidreams
    exs = [{"prompt": "x", "completion": " a"}, {"prompt": "y", "completion": " b"}]
    runs = []
    for data, w in ((exs, [1.0, 0.0]), (exs[:1], None)):
        model = tiny_llama(vocab_size=len(tok))
        runs.append(finetune(model, tok, data, weights=w, steps=3, batch_size=2, lr=1e-3, warmup=0).losses)
    assert runs[0] == pytest.approx(runs[1])


def test_mix_gives_each_set_its_share():
    a, b = [{"i": k} for k in range(3)], [{"i": k} for k in range(10)]
    examples, weights = mix([a, b], [1.0, 3.0])
    assert examples == a + b
    assert sum(weights[:3]) == pytest.approx(1.0) and sum(weights[3:]) == pytest.approx(3.0)
    assert mix([a, b])[1][:3] == [1 / 3] * 3  # equal shares by default
    for shares in ([1.0], [-1.0, 1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="`shares`"):
            mix([a, b], shares)
    with pytest.raises(ValueError, match="every example set"):
        mix([a, []])


def test_bad_arguments(aidreams):
    model, tok = aidreams
    ex = [{"prompt": "x", "completion": " a"}]
    for kwargs, name in (({"steps": 0}, "`steps`"), ({"batch_size": 1.5}, "`batch_size`"), ({"lr": 0}, "`lr`"),
                         ({"weights": [1.0, 2.0]}, "`weights`"), ({"weights": [-1.0]}, "`weights`"),
                         ({"patience": 2}, "`patience`"), ({"heldout": []}, "`heldout`"),
                         ({"heldout": ex, "patience": 0}, "`patience`"), ({"min_delta": 1.0}, "`min_delta`"),
                         ({"checkpoint_every": 0}, "`checkpoint_every`")):
        with pytest.raises(ValueError, match=name):
            finetune(model, tok, ex, **kwargs)
    with pytest.raises(ValueError, match="`examples`"):
        finetune(model, tok, [])


def _params(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _examples(tok) -> list[dict]:
    return [{"prompt": f"Fix: {w} {w}", "completion": f" {w}"} for w in ("a", "b", "c", "d", "e")]


@pytest.mark.parametrize("bf16", [False, True])
def test_a_resumed_run_ends_as_an_uninterrupted_one(aidreams, tmp_path, bf16):
    """Interrupted after step 5 (last checkpoint at 4) and resumed, a run's losses, held-out curve and
    final weights are exactly those of the same run taken in one go, in either precision."""
    _, tok = aidreams
    kw = {"steps": 9, "batch_size": 2, "lr": 3e-3, "warmup": 2, "heldout": _examples(tok)[:2], "eval_every": 3,
          "bf16": bf16}
    whole = tiny_llama(vocab_size=len(tok))
    ref = finetune(whole, tok, _examples(tok), **kw)

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step == 4:
            raise Stop

    model = tiny_llama(vocab_size=len(tok))
    with pytest.raises(Stop):
        finetune(model, tok, _examples(tok), checkpoint=tmp_path, checkpoint_every=2, progress=interrupt, **kw)
    fresh = tiny_llama(vocab_size=len(tok))  # a new process: the weights come from the checkpoint
    run = finetune(fresh, tok, _examples(tok), checkpoint=tmp_path, checkpoint_every=2, **kw)
    assert run.resumed_at == 4 and run.losses == ref.losses and run.heldout == ref.heldout
    assert run.best_step == ref.best_step
    for k, v in _params(whole).items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    again = finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), checkpoint=tmp_path, **kw)
    assert again.resumed_at == 9 and again.losses == ref.losses  # finished: returned at once


def test_a_checkpoint_of_another_run_is_refused(aidreams, tmp_path):
    _, tok = aidreams
    kw = {"batch_size": 2, "lr": 3e-3, "warmup": 0, "checkpoint": tmp_path}
    finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), steps=2, **kw)
    with pytest.raises(ValueError, match="another run: its lr differ"):
        finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), steps=2, **{**kw, "lr": 1e-3})
    with pytest.raises(ValueError, match="data"):
        finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok)[:3], steps=2, **kw)
    with pytest.raises(ValueError, match="another run: its bf16 differ"):
        finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), steps=2, bf16=True, **kw)
    with pytest.raises(ValueError, match="bf16"):
        finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), steps=2, bf16="yes", **kw)
    (tmp_path / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        finetune(tiny_llama(vocab_size=len(tok)), tok, _examples(tok), steps=2, **kw)


@pytest.mark.parametrize("keep", ["memory", "folder"])
def test_a_plateau_stops_training_at_the_best_model(aidreams, tmp_path, keep):
    """Held-out targets that contradict the training targets soon get worse: training stops after
    `patience` evaluations without a gain and leaves the model at its best evaluation."""
    _, tok = aidreams
    train = _examples(tok)
    heldout = [{"prompt": ex["prompt"], "completion": " z"} for ex in train]
    model = tiny_llama(vocab_size=len(tok))
    run = finetune(model, tok, train, steps=200, batch_size=2, lr=1e-2, warmup=0, heldout=heldout, eval_every=2,
                   patience=3, checkpoint=tmp_path if keep == "folder" else None)
    steps, losses = zip(*run.heldout, strict=True)
    best = losses.index(min(losses))
    assert run.stopped == "plateau" and run.best_step == steps[best] and len(losses) - 1 - best == 3
    assert len(run.losses) == steps[-1] < 200 and steps == tuple(range(0, steps[-1] + 1, 2))
    held = encode_examples(tok, heldout)
    assert heldout_loss(model, held, tok.eos_token_id, 2) == pytest.approx(min(losses), rel=1e-6)


def test_bf16_steps_train_float32_weights(aidreams):
    """Under bf16 autocast the loss falls as in float32, and the weights and optimiser stay float32."""
    _, tok = aidreams
    kw = {"steps": 30, "batch_size": 4, "lr": 1e-2, "warmup": 0}
    runs = {}
    for bf16 in (False, True):
        model = tiny_llama(vocab_size=len(tok))
        runs[bf16] = finetune(model, tok, _examples(tok), bf16=bf16, **kw)
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert runs[True].losses != runs[False].losses  # the passes did run in another precision
    for run in runs.values():
        assert sum(run.losses[-5:]) < 0.5 * sum(run.losses[:5])
