"""Fine-tuning on edit examples: the target-only loss is the model's own loss, and training teaches an edit."""

from __future__ import annotations

import copy

import pytest
import torch

from steer.edits.compact import add_position_tokens
from steer.edits.finetune import encode_examples, finetune, mix, target_loss
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
    losses, secs = finetune(model, tok, examples, steps=40, batch_size=2, lr=3e-3, warmup=0)
    assert len(losses) == 40 and secs > 0 and losses[-1] < losses[0] / 4
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
        runs.append(finetune(model, tok, data, weights=w, steps=3, batch_size=2, lr=1e-3, warmup=0)[0])
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
                         ({"weights": [1.0, 2.0]}, "`weights`"), ({"weights": [-1.0]}, "`weights`")):
        with pytest.raises(ValueError, match=name):
            finetune(model, tok, ex, **kwargs)
    with pytest.raises(ValueError, match="`examples`"):
        finetune(model, tok, [])
