"""FeatureTaps: hidden/attention features by module path, early stop, friendly errors, no leaked hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdlab.errors import UserError
from kdlab.taps import FeatureTaps, TapSpec, needs_attention


@pytest.fixture(scope="module")
def eager_model(tiny_teacher_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def sdpa_model(tiny_teacher_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def batch(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    return dict(tokenizer(["taps read features", "from any module path, by name"], padding=True, return_tensors="pt"))


def all_hooks(model: nn.Module) -> int:
    """Forward hooks on ``model`` (transformers 5 installs a few of its own: compare against a baseline)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hidden_tap_equals_output_hidden_states(eager_model, batch):
    taps = FeatureTaps(eager_model, {"l1": TapSpec("bert.encoder.layer.1"), "emb": TapSpec("bert.embeddings")})
    with torch.no_grad():
        features, output = taps(**batch)
        reference = eager_model(**batch, output_hidden_states=True)
    assert torch.equal(features["l1"], reference.hidden_states[2])  # hidden_states[0] is the embeddings
    assert torch.equal(features["emb"], reference.hidden_states[0])
    assert torch.equal(output.logits, reference.logits)


def test_attention_tap_equals_output_attentions(eager_model, batch):
    spec = TapSpec("bert.encoder.layer.2.attention.self", kind="attention")
    assert needs_attention({"a": spec}) and not needs_attention([TapSpec("bert")])
    with torch.no_grad():
        features, _ = FeatureTaps(eager_model, {"a2": spec})(**batch)
        reference = eager_model(**batch, output_attentions=True)
    b, length = batch["input_ids"].shape
    assert features["a2"].shape == (b, 4, length, length)
    assert torch.allclose(features["a2"], reference.attentions[2])
    assert torch.allclose(features["a2"].sum(-1), torch.ones(b, 4, length))


def test_attention_tap_with_sdpa_is_a_user_error(sdpa_model):
    with pytest.raises(UserError, match="eager") as err:
        FeatureTaps(
            sdpa_model,
            {"[0].teacher": TapSpec("bert.encoder.layer.0.attention.self", "attention")},
            key_prefix="distill.matches",
        )
    assert err.value.key == "distill.matches[0].teacher"
    assert "eager" in err.value.fix


class _Block(nn.Module):
    """Returns (hidden, None) like a self-attention module that did not compute probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.linear(x), None


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.unused = nn.Linear(4, 4)
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)[0]
        lengths = torch.full((x.shape[0],), x.shape[1])
        self.lstm(nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True))  # returns a PackedSequence
        return x.sum(-1)


def test_taps_work_on_any_module_and_report_missing_attention():
    net = _Net()
    x = torch.randn(2, 3, 4)
    features, output = FeatureTaps(net, {"b0": TapSpec("blocks.0"), "lin": TapSpec("blocks.1.linear")})(x=x)
    assert features["b0"].shape == (2, 3, 4) and output.shape == (2, 3)
    with pytest.raises(UserError, match="no attention probabilities") as err:
        FeatureTaps(net, {"m": TapSpec("blocks.0", "attention")}, key_prefix="distill.matches[1]")(x=x)
    assert err.value.key == "distill.matches[1].m"
    with pytest.raises(UserError, match="not a tensor"):
        FeatureTaps(net, {"m": TapSpec("lstm")})(x=x)
    assert all_hooks(net) == 0  # removed although the hook raised
    with pytest.raises(UserError, match="never ran"):
        FeatureTaps(net, {"u": TapSpec("unused")})(x=x)
    with pytest.raises(UserError, match="unknown tap kind"):
        TapSpec("blocks.0", kind="logits")  # type: ignore[arg-type]


def test_stop_early_skips_later_modules(eager_model, batch):
    baseline = all_hooks(eager_model)
    calls: dict[str, int] = {"layer3": 0, "classifier": 0, "pooler": 0}

    def counter(name: str):
        def hook(*_):
            calls[name] += 1

        return hook

    handles = [
        eager_model.bert.encoder.layer[3].register_forward_hook(counter("layer3")),
        eager_model.classifier.register_forward_hook(counter("classifier")),
        eager_model.bert.pooler.register_forward_hook(counter("pooler")),
    ]
    try:
        specs = {
            "h2": TapSpec("bert.encoder.layer.2"),
            "a2": TapSpec("bert.encoder.layer.2.attention.self", "attention"),
            "h0": TapSpec("bert.encoder.layer.0"),
        }
        stopper = FeatureTaps(eager_model, specs, stop_early=True)
        # the outermost tapped ancestor finishes after its tapped children: stop there, not at attention.self
        assert stopper.stop_path == "bert.encoder.layer.2"
        with torch.no_grad():
            features, output = stopper(**batch)
        assert output is None
        assert calls == {"layer3": 0, "classifier": 0, "pooler": 0}
        with torch.no_grad():
            full, full_output = FeatureTaps(eager_model, specs)(**batch)
        assert full_output is not None and calls == {"layer3": 1, "classifier": 1, "pooler": 1}
        assert features.keys() == full.keys()
        assert all(torch.equal(features[k], full[k]) for k in full)
        # the DEVELOPERS.md spelling of the flag works too
        assert FeatureTaps(eager_model, {"h0": specs["h0"]}, stop_after_deepest=True)(**batch)[1] is None
    finally:
        for handle in handles:
            handle.remove()
    assert all_hooks(eager_model) == baseline


def test_unknown_path_suggests_close_matches(eager_model):
    with pytest.raises(UserError) as err:
        FeatureTaps(eager_model, {"student": TapSpec("encoder.layer.3")}, key_prefix="distill.matches[0]")
    assert err.value.key == "distill.matches[0].student"
    assert "bert.encoder.layer.3" in err.value.problem
    assert "kdlab inspect" in err.value.fix
    with pytest.raises(UserError, match=r"bert\.encoder\.layer\.1") as err:
        FeatureTaps(eager_model, {"t": TapSpec("bert.encoder.layers.1")})
    assert err.value.problem.split("did you mean: ")[1].count(",") <= 4  # at most 5 suggestions


def test_hooks_never_leak(eager_model, batch):
    baseline = all_hooks(eager_model)
    taps = FeatureTaps(eager_model, {"h": TapSpec("bert.encoder.layer.1")})
    assert all_hooks(eager_model) == baseline  # nothing attached outside a call
    for _ in range(2):
        taps(**batch)
        assert all_hooks(eager_model) == baseline
    broken = {**batch, "input_ids": batch["input_ids"] + 10**6}  # ids beyond the vocabulary
    with pytest.raises((IndexError, RuntimeError)):
        taps(**broken)  # the model itself raises, before any tap fired
    assert all_hooks(eager_model) == baseline
    with FeatureTaps(eager_model, {"h": TapSpec("bert.encoder.layer.1")}) as ctx:
        ctx(**batch)
    assert all_hooks(eager_model) == baseline


def test_features_keep_gradients(tiny_teacher_dir, batch):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, attn_implementation="eager")
    features, _ = FeatureTaps(model, {"h": TapSpec("bert.encoder.layer.1")}, stop_early=True)(**batch)
    features["h"].pow(2).mean().backward()
    assert model.bert.encoder.layer[0].output.dense.weight.grad is not None
    assert model.bert.encoder.layer[3].output.dense.weight.grad is None
