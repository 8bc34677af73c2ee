"""Text models explained in embedding space (``xaibench.models.text``): the wrapper runs the model as it
runs on ids, path methods equal captum's LayerIntegratedGradients on the embedding layer, perturbation
methods replace tokens by the mask token, and the attention methods read the class token's row."""

from __future__ import annotations

import captum.attr
import pytest
import torch

from tests.attribution.test_path import SAMPLE_MODELS
from tests.conftest import make_text_model, text_ids
from tests.text_models import hf_model_dir
from xaibench.attribution import METHODS
from xaibench.attribution.attention import attention_relevance, attention_rollout
from xaibench.core.errors import InputError
from xaibench.models import load_model
from xaibench.models.text import token_scores


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory):
    return load_model(hf_model_dir(tmp_path_factory.mktemp("hf") / "model")).module


def _models(hf_model) -> dict:
    return {"plain": make_text_model(0), "huggingface": hf_model,
            "shipped": load_model(SAMPLE_MODELS / "planted_text_transformer.pt").module}


def _ids_forward(wrapper):
    """The wrapped model on full token ids (special tokens included): what captum explains."""
    if wrapper.huggingface:
        return lambda ids: wrapper.model(input_ids=ids).logits
    return wrapper.model


def _content_ids(wrapper, n: int = 3, seed: int = 0, length: int = 5) -> torch.Tensor:
    words = wrapper.substitutes()
    words = words[words != wrapper.tokenizer.substrate_id]
    picks = torch.randint(words.numel(), (n, length), generator=torch.Generator().manual_seed(seed))
    return words[picks]


def _full(wrapper, content: torch.Tensor) -> torch.Tensor:
    n = content.shape[0]
    return torch.cat([wrapper.prefix.expand(n, -1), content, wrapper.suffix.expand(n, -1)], dim=1)


@pytest.mark.parametrize("kind", ["plain", "huggingface"])
def test_the_wrapper_gives_the_models_logits_on_ids(kind, hf_model):
    wrapper = _models(hf_model)[kind]
    content = _content_ids(wrapper)
    with torch.no_grad():
        expected = _ids_forward(wrapper)(_full(wrapper, content))
        got = wrapper(wrapper.embed(content))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # float rounding of the concatenation
    zero = torch.zeros_like(wrapper.embed(content))  # the origin is the mask token
    masked = torch.full_like(content, wrapper.tokenizer.substrate_id)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(zero), _ids_forward(wrapper)(_full(wrapper, masked)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["plain", "huggingface", "shipped"])
@pytest.mark.parametrize(("name", "rule"), [("integrated_gradients", "gausslegendre"),
                                            ("integrated_gradients", "riemann_trapezoid"),
                                            ("path_integrated_gradients", "riemann_middle")])
def test_path_methods_equal_captum_layer_integrated_gradients(kind, name, rule, hf_model):
    wrapper = _models(hf_model)[kind]
    content = _content_ids(wrapper)
    target = torch.tensor([0, 1, 1])
    ours = METHODS.get(name)().attribute(wrapper, wrapper.embed(content), target=target, n_steps=32, method=rule)
    baseline = torch.full_like(content, wrapper.tokenizer.substrate_id)
    layer = captum.attr.LayerIntegratedGradients(_ids_forward(wrapper), wrapper.embedding)
    theirs = layer.attribute(_full(wrapper, content), baselines=_full(wrapper, baseline), target=target,
                             n_steps=32, method=rule)
    before = wrapper.prefix.numel()
    assert theirs.sum(dim=-1)[:, :before].abs().max() == 0  # special tokens: the same in both ends
    torch.testing.assert_close(ours.sum(dim=1), theirs.sum(dim=-1)[:, before:before + 5], atol=1e-5, rtol=0)
    assert ours.sum(dim=1).abs().max() > 1e-3  # not an agreement of zeros


@pytest.mark.parametrize("kind", ["plain", "huggingface"])
def test_attention_methods_read_the_class_tokens_row_over_the_content(kind, hf_model):
    wrapper = _models(hf_model)[kind]
    content = _content_ids(wrapper, n=2)
    inputs = wrapper.embed(content)
    target = torch.tensor([1, 0])
    rollout = METHODS.get("attention_rollout")().attribute(wrapper, inputs, target=target)
    relevance = METHODS.get("attention_relevance")().attribute(wrapper, inputs, target=target)
    attentions, gradients = _attention_and_gradients(wrapper, content, target)
    before = wrapper.prefix.numel()
    expected_rollout = attention_rollout(attentions)[:, 0, before:before + 5]
    expected_relevance = attention_relevance(attentions, gradients)[:, 0, before:before + 5]
    torch.testing.assert_close(rollout, expected_rollout.unsqueeze(1).expand_as(inputs), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(relevance, expected_relevance.unsqueeze(1).expand_as(inputs), atol=1e-6, rtol=1e-5)
    assert token_scores(rollout).equal(rollout[:, 0]) and token_scores(relevance).equal(relevance[:, 0])


def _attention_and_gradients(wrapper, content: torch.Tensor, target: torch.Tensor):
    """Per-layer attention probabilities and d logit / d probabilities, read here without xaibench."""
    ids = _full(wrapper, content)
    with torch.enable_grad():
        if wrapper.huggingface:
            out = wrapper.model(input_ids=ids, output_attentions=True)
            attentions, logits = list(out.attentions), out.logits
        else:
            from xaibench.attribution.attention_capture import (
                attention_modules,
                capturing_attention,
            )

            with capturing_attention(attention_modules(wrapper)) as captured:
                logits = wrapper.model(ids)
            attentions = [entry.probabilities for entry in captured]
            sources = [entry.source for entry in captured]
        picked = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(picked, attentions if wrapper.huggingface else sources)
    grads = [g.view(a.shape) for g, a in zip(grads, attentions, strict=True)]
    return [a.detach() for a in attentions], grads


def test_special_tokens_are_outside_the_explained_space():
    wrapper = make_text_model(0)
    encoded = wrapper.tokenizer.encode(["w1 w2 w3"])[0]
    assert encoded.tokens == ("w1", "w2", "w3")
    assert (encoded.prefix, encoded.suffix) == ((2,), (3,))  # [CLS] and [SEP] stay with the wrapper
    assert wrapper.tokenizer.substrate == "[MASK]"
    assert 2 not in wrapper.substitutes().tolist() and 4 not in wrapper.substitutes().tolist()


def test_a_tokenizer_without_any_substrate_token_is_refused():
    from tokenizers import Tokenizer, models

    from xaibench.models.text import TextTokenizer

    with pytest.raises(InputError, match="mask, unknown or padding token"):
        TextTokenizer(Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")))


def test_bee_draws_its_baselines_from_embedding_families_on_text():
    from xaibench.attribution.bee import BeeParams, _families

    names = [name for name, _ in _families(BeeParams(), make_text_model(0).embed(text_ids(2)), "text")]
    assert names == ["zero", "constant", "uniform", "gaussian"]  # zero is the mask token; no blur across tokens


@pytest.mark.parametrize("name", ["feature_ablation", "occlusion"])
def test_perturbation_methods_take_one_token_per_feature_on_text(name):
    # 24 tokens: the sequence default (a tenth of the length) would group them in pairs
    wrapper = load_model(SAMPLE_MODELS / "planted_text_transformer.pt").module
    content = _content_ids(wrapper, n=2, length=24)
    target = torch.tensor([0, 2])
    maps = METHODS.get(name)().attribute(wrapper, wrapper.embed(content), target=target)
    scores = token_scores(maps)  # the drop is given to every embedding channel of the token: taken once
    assert maps.equal(scores.unsqueeze(1).expand_as(maps))
    forward = _ids_forward(wrapper)
    with torch.no_grad():
        full = forward(_full(wrapper, content)).gather(1, target[:, None]).squeeze(1)
        for position in range(content.shape[1]):  # each token alone replaced by the mask token
            masked = content.clone()
            masked[:, position] = wrapper.tokenizer.substrate_id
            drop = full - forward(_full(wrapper, masked)).gather(1, target[:, None]).squeeze(1)
            torch.testing.assert_close(scores[:, position], drop, atol=1e-5, rtol=1e-5)


class _Scaled(torch.nn.Embedding):
    """An embedding that scales its rows in forward, as transformers' scaled word embeddings do."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * 4.0


class _BagOfTokens(torch.nn.Module):
    def __init__(self, embedding: torch.nn.Module) -> None:
        super().__init__()
        self.embedding, self.fc = embedding, torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.embedding(ids)).mean(dim=1))


def test_the_origin_is_the_mask_token_as_the_layer_outputs_it():
    from tests.conftest import toy_tokenizer
    from xaibench.models.text import TextTokenizer, text_classifier

    torch.manual_seed(0)
    inner = _BagOfTokens(_Scaled(17, 8)).eval()
    wrapper = text_classifier(inner, TextTokenizer(toy_tokenizer()))
    content = text_ids(2, seed=1)
    masked = torch.full_like(content, wrapper.tokenizer.substrate_id)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(wrapper.embed(content)), inner(_full(wrapper, content)))
        torch.testing.assert_close(wrapper(torch.zeros_like(wrapper.embed(content))), inner(_full(wrapper, masked)))
    torch.testing.assert_close(wrapper.token_vectors()[content[0]], wrapper.embed(content)[0].T)


def test_an_embedding_layer_the_model_does_not_read_is_refused():
    from tests.conftest import toy_tokenizer
    from xaibench.core.errors import IncompatibleError
    from xaibench.models.text import TextTokenizer, text_classifier

    class Tied(torch.nn.Module):  # reads its tokens through a copy that shares the weight, as BART does
        def __init__(self) -> None:
            super().__init__()
            self.shared = torch.nn.Embedding(17, 8)
            self.inner = _BagOfTokens(torch.nn.Embedding(17, 8))
            self.inner.embedding.weight = self.shared.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.inner(ids)

    wrapper = text_classifier(Tied().eval(), TextTokenizer(toy_tokenizer()), layer="shared")
    with pytest.raises(IncompatibleError, match="ran 0 times"):
        wrapper(wrapper.embed(text_ids(1)))
    good = text_classifier(Tied().eval(), TextTokenizer(toy_tokenizer()), layer="inner.embedding")
    assert good(good.embed(text_ids(1))).shape == (1, 3)


def test_roberta_style_models_take_two_tokens_fewer_than_their_positions(hf_model):
    from types import SimpleNamespace

    config = hf_model.model.config
    assert hf_model.max_tokens == config.max_position_embeddings  # BERT: every position
    roberta = SimpleNamespace(model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    hf_model.model.config = roberta
    try:
        assert hf_model.max_tokens == 512
    finally:
        hf_model.model.config = config
