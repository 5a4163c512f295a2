"""Preference pairs -> padded token tensors for one forward pass over chosen, rejected and y_ref."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from selm_ray.records import PreferencePair


def _encode(tokenizer: Any, prompt_text: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS, and the mask of the scored (response) positions.

    Prompt tokens are never scored. Over-long sequences lose the END of the response (the prompt
    is kept whole unless it alone exceeds max_length - 1, then it loses its beginning).
    """
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    resp = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = prompt[-(max_length - 1):]
    resp = resp[: max_length - len(prompt)]
    return prompt + resp, [0] * len(prompt) + [1] * len(resp)


def collate(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int,
            with_ref_response: bool) -> dict[str, torch.Tensor]:
    """Rows ordered [chosen_0..chosen_B-1, rejected_0.., ref_0..] so one forward scores them all.

    Returns input_ids (N, T), attention_mask (N, T), loss_mask (N, T) with N = 2B or 3B, and
    ``first``: the earliest position whose logit scores a response token.
    """
    texts = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    prompts = [p.prompt_text for p in pairs] * 2
    if with_ref_response:
        missing = [p.pair_id for p in pairs if p.ref_response is None]
        if missing:
            raise ValueError(f"loss needs y_ref but pairs {missing[:3]} have no ref_response")
        texts += [p.ref_response for p in pairs]
        prompts += [p.prompt_text for p in pairs]
    encoded = [_encode(tokenizer, pr, tx, max_length) for pr, tx in zip(prompts, texts)]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (row, m) in enumerate(encoded):  # right padding
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        mask[i, : len(row)] = torch.tensor(m)
    # the position predicting the earliest response token: logits before it are never needed
    first = int(mask.argmax(dim=1).min().item()) - 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask, "first": max(0, first)}


def kept(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``batch[key]`` from the first kept logit position on, aligned with the kept logits."""
    return batch[key][:, batch["first"]:]


def split_logps(logps: torch.Tensor, batch: int, prefix: str) -> dict[str, torch.Tensor]:
    """(N,) log-probs in collate order -> {prefix_chosen, prefix_rejected[, prefix_refresp]}."""
    out = {f"{prefix}_chosen": logps[:batch], f"{prefix}_rejected": logps[batch: 2 * batch]}
    if logps.shape[0] == 3 * batch:
        out[f"{prefix}_refresp"] = logps[2 * batch:]
    return out
