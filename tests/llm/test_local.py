"""The transformers backend on a tiny random GPT-2 built here: offline, deterministic, thread-safe."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

transformers = pytest.importorskip("transformers")
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from xaibench.core.errors import InputError
from xaibench.llm.backends import BACKENDS, LLMError, Reply, Request, Settings
from xaibench.llm.local import EXTRA, TransformersBackend

SENTENCES = ["system : rank the features by importance", "user : which features matter most ?",
             "assistant : income , age , credit score", "the model predicts default from income and age"]
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")
MESSAGES = (("system", "rank the features by importance"), ("user", "which features matter most ?"))


@pytest.fixture(scope="module", params=["template", "plain"])
def model_dir(request, tmp_path_factory):
    """A directory with a word-level tokenizer and a 1-layer random GPT-2, with or without a chat template."""
    word_level = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "[PAD]", "[EOS]", "[SEP]"]))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]",
                                                     pad_token="[PAD]", eos_token="[EOS]")
    if request.param == "template":
        tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    # Weights far from the default 0.02 scale, so that the greedy reply depends on the prompt and varies.
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=len(tokenizer), n_positions=512,
                                     initializer_range=0.5,
                                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp(request.param)
    tokenizer.save_pretrained(folder)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def _reference(folder, max_tokens):
    """What the backend must answer: the prompt's length, a greedy decode done here by hand, and how
    many tokens it generated."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    if tokenizer.chat_template:
        encoded = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in MESSAGES],
                                                add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        text = "\n".join(f"{role}: {content}" for role, content in MESSAGES) + "\nassistant:"
        encoded = tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=encoded["attention_mask"], do_sample=False,
                             max_new_tokens=max_tokens)
    return ids.shape[1], tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), out.shape[1] - ids.shape[1]


def test_greedy_reply_is_the_direct_decode_and_deterministic(model_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert bool(tokenizer.chat_template) == (model_dir.name.startswith("template"))  # both paths are covered
    backend = BACKENDS.get("transformers")(Settings())
    request = Request(str(model_dir), MESSAGES, temperature=0.0, max_tokens=6)
    first, second = backend.complete(request), backend.complete(request)
    prompt_tokens, text, generated = _reference(model_dir, 6)
    assert isinstance(first, Reply) and first == second
    assert first.text == text and len(set(text.split())) > 1
    assert first.prompt_tokens == prompt_tokens > len(MESSAGES)
    assert first.completion_tokens == generated
    other = backend.complete(Request(str(model_dir), (("user", "income age credit"),), max_tokens=6))
    assert other.text != first.text  # the prompt reaches the model


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(model_dir):
    backend = TransformersBackend(Settings())
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    replies = [backend.complete(Request(str(model_dir), MESSAGES, temperature=1.5, max_tokens=12, seed=seed))
               for seed in (7, 7, 8, 9, 10)]
    assert torch.equal(torch.rand(3), expected_next)
    assert replies[0] == replies[1]
    assert len({r.text for r in replies}) > 1  # the seed matters: sampling does not fall back to greedy
    assert all(r.completion_tokens <= 12 for r in replies)


def test_concurrent_requests_load_once_and_match_a_single_call(model_dir, monkeypatch):
    single = TransformersBackend(Settings()).complete(Request(str(model_dir), MESSAGES, max_tokens=8))
    loads = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def counting(path, **kwargs):
        loads.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", counting)
    backend = TransformersBackend(Settings())
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(backend.complete, [Request(str(model_dir), MESSAGES, max_tokens=8)] * 4))
    assert replies == [single] * 4
    assert len(loads) == 1


def test_the_reply_stops_at_the_context_and_a_prompt_past_it_fails(model_dir):
    backend = TransformersBackend(Settings())
    near = backend.complete(Request(str(model_dir), (("user", "age " * 500),), max_tokens=50))
    assert near.prompt_tokens < 512 and near.completion_tokens == 512 - near.prompt_tokens < 50
    with pytest.raises(LLMError, match="no room in the model's context of 512"):
        backend.complete(Request(str(model_dir), (("user", "age " * 600),), max_tokens=5))


def test_registered_and_names_its_folder(tmp_path, monkeypatch):
    assert "transformers" in BACKENDS.list()
    assert BACKENDS.get("transformers").description.startswith("a local Hugging Face causal LM")
    monkeypatch.chdir(tmp_path)
    assert TransformersBackend(Settings()).identity == f"transformers {tmp_path.resolve()}"


def test_a_missing_or_unloadable_directory_is_an_input_error(tmp_path):
    backend = TransformersBackend(Settings())
    with pytest.raises(InputError, match="no directory"):
        backend.complete(Request(str(tmp_path / "absent"), MESSAGES))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot load a causal LM") as caught:
        backend.complete(Request(str(tmp_path / "empty"), MESSAGES))
    assert "\n" not in str(caught.value)


def test_without_the_extra_the_backend_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(InputError) as caught:
        TransformersBackend(Settings())
    assert str(caught.value) == EXTRA


def test_listing_the_backends_imports_neither_transformers_nor_torch():
    code = ("import sys; from xaibench.llm.backends import BACKENDS; names = BACKENDS.list(); "
            "print('transformers' in names, 'transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]
