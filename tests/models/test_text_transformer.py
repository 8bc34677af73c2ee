"""The text transformer: shapes, layer names, length limit; checkpoints with a tokenizer; the sample model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from xaibench.core.errors import InputError
from xaibench.data import load_data
from xaibench.models import ARCHITECTURES, ModelMeta, archs, save_checkpoint
from xaibench.models.checkpoint import build_model, parse_checkpoint
from xaibench.models.vit import EncoderBlock

SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "planted_text_transformer.pt"
META = ModelMeta(modality="text", class_names=("a", "b", "c"))


def _model(**kwargs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return archs.text_transformer(vocab_size=20, **kwargs).eval()


def test_registered_without_an_input_shape() -> None:
    factory = ARCHITECTURES.get("text_transformer")
    assert factory is archs.text_transformer
    assert (factory.modality, factory.input_shape) == ("text", None)


def test_logits_are_the_head_on_token_0_of_the_blocks() -> None:
    model = _model(max_length=16, num_classes=3)
    ids = torch.randint(0, 20, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids)
        tokens = model.token_embedding(ids) + model.pos_embedding[:, :10]
        expected = model.head(model.ln(model.layers(tokens))[:, 0])
        assert torch.equal(model(ids.float()), logits)  # float ids, as xaibench's text data holds them
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 20
        assert not torch.equal(model(changed), logits)  # no mask: the last token reaches token 0
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_layer_names_and_padding() -> None:
    model = _model(num_layers=3, hidden_dim=32, num_heads=2, mlp_dim=48, pad_id=0)
    assert [name for name, _ in model.named_children()] == ["token_embedding", "layers", "ln", "head"]
    assert model.pos_embedding.shape == (1, 64, 32)
    assert model.token_embedding.padding_idx == 0
    assert torch.equal(model.token_embedding.weight[0], torch.zeros(32))
    assert list(dict(model.layers.named_children())) == [f"encoder_layer_{i}" for i in range(3)]
    assert all(isinstance(block, EncoderBlock) for block in model.layers)
    assert all(isinstance(block.self_attention, torch.nn.MultiheadAttention) for block in model.layers)


@pytest.mark.parametrize("shape", [(2, 9), (2, 0), (9,)])
def test_refuses_ids_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"token ids \(N, T\) with 1 <= T <= 8"):
        _model(max_length=8)(torch.zeros(shape, dtype=torch.long))


def test_checkpoint_round_trips_the_tokenizer(tmp_path: Path) -> None:
    model, path = _model(num_classes=3), tmp_path / "m.pt"
    kwargs = {"vocab_size": 20, "num_classes": 3}
    save_checkpoint(path, model, arch="text_transformer", arch_kwargs=kwargs, meta=META, tokenizer='{"x": 1}')
    stored = torch.load(path, weights_only=True)
    assert stored["tokenizer"] == '{"x": 1}'
    checkpoint = parse_checkpoint(stored, str(path))
    assert (checkpoint.tokenizer, checkpoint.meta) == ('{"x": 1}', META)
    rebuilt = build_model(checkpoint.arch, checkpoint.arch_kwargs, checkpoint.state_dict, trusted=False,
                          source=str(path)).eval()
    ids = torch.tensor([[2, 5, 7, 3]])
    with torch.no_grad():
        assert torch.equal(rebuilt(ids), model(ids))


def test_checkpoint_without_or_with_a_bad_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, _model(), arch="text_transformer", arch_kwargs={"vocab_size": 20}, meta=META)
    stored = torch.load(path, weights_only=True)
    assert "tokenizer" not in stored and parse_checkpoint(stored, "m.pt").tokenizer is None
    with pytest.raises(InputError, match="'tokenizer' must be a tokenizer's JSON text, got a dict"):
        parse_checkpoint({**stored, "tokenizer": {"model": 1}}, "m.pt")
    with pytest.raises(TypeError, match="tokenizer must be the tokenizer's JSON string, got a bytes"):
        save_checkpoint(path, _model(), arch="text_transformer", arch_kwargs={}, meta=META, tokenizer=b"{}")


def test_sample_model_tokenizer_and_accuracy() -> None:
    checkpoint = parse_checkpoint(torch.load(SAMPLE, weights_only=True), str(SAMPLE))
    assert checkpoint.meta == ModelMeta(modality="text", class_names=("negative", "neutral", "positive"),
                                        dataset="planted_text")
    tokenizer = Tokenizer.from_str(checkpoint.tokenizer)
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert [tokenizer.token_to_id(token) for token in specials] == [0, 1, 2, 3, 4]
    test = load_data("planted_text:test").select(list(range(200)))
    encoded = tokenizer.encode_batch(list(test.texts))
    assert encoded[0].tokens == ["[CLS]", *test.texts[0].split(" "), "[SEP]"]
    assert tokenizer.encode("The AWFUL film").tokens == ["[CLS]", "the", "awful", "film", "[SEP]"]
    model = build_model(checkpoint.arch, checkpoint.arch_kwargs, checkpoint.state_dict, trusted=False,
                        source=str(SAMPLE)).eval()
    with torch.no_grad():
        predictions = model(torch.tensor([e.ids for e in encoded])).argmax(dim=1)
    assert (predictions == test.y).float().mean().item() >= 0.98
