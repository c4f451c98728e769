"""One concatenated forward of chosen + rejected equals two separate forwards (issue 4, C1)."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from slamming.eval.logprobs import sequence_logprobs
from slamming.tasks.preference import concatenated_logprobs
from slamming.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID


def preference_side(prompts: list[list[int]], completions: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded ``<S> prompt completion <S>`` rows; only the completion (and its <S>) is scored."""
    rows = [[BOS_ID, *p, *c, EOS_ID] for p, c in zip(prompts, completions, strict=True)]
    length = max(len(r) for r in rows) - 1
    ids = torch.full((len(rows), length), PAD_ID)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX)
    for i, (row, p) in enumerate(zip(rows, prompts, strict=True)):
        ids[i, : len(row) - 1] = torch.tensor(row[:-1])
        mask[i, : len(row) - 1] = 1
        labels[i, len(p) : len(row) - 1] = torch.tensor(row[len(p) + 1 :])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _model(seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def test_concatenated_forward_equals_two_forwards() -> None:
    model = _model(0)
    prompts = [[5, 6, 7], [8, 9]]
    chosen = preference_side(prompts, [[10, 11, 12, 13], [14]])
    rejected = preference_side(prompts, [[15, 16], [17, 18, 19, 20, 21, 22]])
    with torch.no_grad():
        c, r = concatenated_logprobs(model, chosen, rejected)
        alone_c, _ = sequence_logprobs(
            model(input_ids=chosen["input_ids"], attention_mask=chosen["attention_mask"]).logits,
            chosen["labels"],
        )
        alone_r, _ = sequence_logprobs(model(input_ids=rejected["input_ids"], attention_mask=rejected["attention_mask"]).logits, rejected["labels"])  # fmt: skip
    assert torch.allclose(c, alone_c, atol=1e-5) and torch.allclose(r, alone_r, atol=1e-5)
