"""A tiny Hugging Face sequence classifier directory, built offline for the text tests.

``hf_model_dir`` writes what a researcher's fine-tuned model directory holds: ``config.json``, random
weights as ``model.safetensors`` and a ``tokenizer.json`` trained here by the ``tokenizers`` library (a
word-level vocabulary with BERT's special tokens and its [CLS] text [SEP] template), plus
``tokenizer_config.json`` naming the mask token. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SENTENCES = ("the film was good", "the plot was bad", "a good cast and a bad script",
             "the music was fine", "an actor was great", "the ending was poor")


def trained_tokenizer():
    """A word-level tokenizer trained on ``SENTENCES`` by the sample models' training script: BERT's
    special tokens and its [CLS] text [SEP] template."""
    from tests.models.test_sample_models import TRAIN

    return TRAIN.word_tokenizer(SENTENCES)


def hf_model_dir(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT classifier (width 16, 2 heads, 2 labels) with random weights, saved in ``path``."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = trained_tokenizer()
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=2, initializer_range=0.5,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                        num_labels=2, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1}, pad_token_id=0)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"mask_token": "[MASK]", "pad_token": "[PAD]"}))
    return path
