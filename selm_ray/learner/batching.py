"""Preference pairs -> padded token tensors for one forward pass over chosen, rejected and y_ref."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from selm_ray.losses import scattered_logps, sequence_logps
from selm_ray.records import PreferencePair


def _encode(tokenizer: Any, prompt_text: str, response: str, max_length: int,
            prompt_ids: Sequence[int] = (), response_ids: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response, and the mask of the scored (response) positions.

    With the engine's own ids, exactly those tokens are scored; from text, the response is
    tokenized and gets an EOS. Prompt tokens are never scored. Over-long sequences lose the END of
    the response (the prompt is kept whole unless it alone exceeds max_length - 1).
    """
    prompt = list(prompt_ids) or tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    resp = list(response_ids) or tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = prompt[-(max_length - 1):]
    resp = resp[: max_length - len(prompt)]
    return prompt + resp, [0] * len(prompt) + [1] * len(resp)


def _rows(pairs: Sequence[PreferencePair], with_ref_response: bool) -> list[tuple[PreferencePair, str, tuple]]:
    """(pair, response text, response ids) per row, in the order chosen..., rejected..., ref..."""
    rows = [(p, p.chosen, p.chosen_ids) for p in pairs] + [(p, p.rejected, p.rejected_ids) for p in pairs]
    if with_ref_response:
        missing = [p.pair_id for p in pairs if p.ref_response is None]
        if missing:
            raise ValueError(f"loss needs y_ref but pairs {missing[:3]} have no ref_response")
        rows += [(p, p.ref_response, p.ref_ids) for p in pairs]
    return rows


def collate(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int,
            with_ref_response: bool) -> dict[str, Any]:
    """Rows ordered [chosen_0..chosen_B-1, rejected_0.., ref_0..] so one forward scores them all.

    Returns input_ids (N, T), attention_mask (N, T), loss_mask (N, T) with N = 2B or 3B,
    ``first``: the earliest position whose logit scores a response token, and ``truncated``:
    whether any row lost tokens to max_length.
    """
    rows = _rows(pairs, with_ref_response)
    encoded = [_encode(tokenizer, p.prompt_text, text, max_length, p.prompt_ids, ids) for p, text, ids in rows]
    full = [len(p.prompt_ids) + len(ids) for p, _, ids in rows]
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
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask, "first": max(0, first),
            "truncated": any(n > max_length for n in full)}


def kept(batch: dict[str, Any], key: str) -> torch.Tensor:
    """``batch[key]`` from the first kept logit position on, aligned with the kept logits."""
    return batch[key][:, batch["first"]:]


def row_logps(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """(N,) summed response log-probs per row from the logits of either layout (pack / collate)."""
    if "predict" in batch:
        return scattered_logps(logits, batch["targets"], batch["row"], batch["rows"])
    return sequence_logps(logits, kept(batch, "input_ids"), kept(batch, "loss_mask"))


def engine_reference_logps(pairs: Sequence[PreferencePair], batch: dict[str, Any], ref_version: int,
                           with_ref_response: bool) -> torch.Tensor | None:
    """(N,) reference log-probs taken from the generating engine, or None if they do not apply.

    They apply when every response was sampled by the reference policy itself (its version), with
    token ids kept and nothing truncated: then log pi_ref(y|x) was already summed by vLLM and the
    learner's reference forward pass is redundant (iterative schedule: pi_ref = pi_t = generator).
    """
    if batch["truncated"]:
        return None
    rows = _rows(pairs, with_ref_response)
    keys = {"chosen": ("chosen_gen_logp", "chosen_ids", "chosen_version"),
            "rejected": ("rejected_gen_logp", "rejected_ids", "rejected_version"),
            "ref": ("ref_gen_logp", "ref_ids", "chosen_version")}
    order = ["chosen"] * len(pairs) + ["rejected"] * len(pairs) + ["ref"] * (len(rows) - 2 * len(pairs))
    values = []
    for (p, _, _), which in zip(rows, order):
        lp_key, ids_key, version_key = keys[which]
        lp, ids, version = getattr(p, lp_key), getattr(p, ids_key), getattr(p, version_key)
        if lp is None or not ids or not p.prompt_ids or version != ref_version:
            return None
        values.append(lp)
    return torch.tensor(values, dtype=torch.float32)


def split_logps(logps: torch.Tensor, batch: int, prefix: str) -> dict[str, torch.Tensor]:
    """(N,) log-probs in collate order -> {prefix_chosen, prefix_rejected[, prefix_refresp]}."""
    out = {f"{prefix}_chosen": logps[:batch], f"{prefix}_rejected": logps[batch: 2 * batch]}
    if logps.shape[0] == 3 * batch:
        out[f"{prefix}_refresp"] = logps[2 * batch:]
    return out


def pack(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int,
         with_ref_response: bool) -> dict[str, Any]:
    """All pairs in ONE row with each prompt once: [x_0 y_w0 y_l0 y_ref0 | x_1 y_w1 ...].

    Every response attends causally to its own tokens and its pair's prompt only, and its
    positions continue from the prompt's end, so each response is scored exactly as in its own
    padded row (``collate``), but the prompt is computed once instead of two or three times and
    there is no padding: on a CPU learner that is most of the forward/backward work saved.
    Rows of the result are in collate order (chosen..., rejected..., ref...).

    Returns input_ids (1, L), position_ids (1, L), attention_mask (1, 1, L, L) bool (True =
    may attend), ``predict`` (M,): the positions whose logits are scored, ``targets`` (M,): the
    token each predicts, ``row`` (M,): its row, ``rows``: N, and ``truncated`` as collate.
    """
    rows = _rows(pairs, with_ref_response)
    encoded = [_encode(tokenizer, p.prompt_text, text, max_length, p.prompt_ids, ids) for p, text, ids in rows]
    n, per_pair = len(pairs), len(rows) // len(pairs)
    ids: list[int] = []
    pos: list[int] = []
    segment: list[int] = []  # per token: its segment (a prompt or a response)
    owner: list[int] = []  # per token: the prompt segment it may also see (its own for prompts)
    predict: list[int] = []
    targets: list[int] = []
    row_of: list[int] = []
    for k in range(n):
        first_ids, first_mask = encoded[k]
        prompt_len = first_mask.index(1) if 1 in first_mask else len(first_ids)
        prompt_seg, prompt_end = k * (per_pair + 1), len(ids) + prompt_len - 1
        ids += first_ids[:prompt_len]
        pos += list(range(prompt_len))
        segment += [prompt_seg] * prompt_len
        owner += [prompt_seg] * prompt_len
        for r in range(k, len(rows), n):  # chosen, rejected[, ref] of pair k
            row_ids, row_mask = encoded[r]
            resp = row_ids[prompt_len:]
            seg, start = prompt_seg + 1 + (r // n), len(ids)
            if resp:  # the prompt's last position predicts the first token, then each token the next
                predict += [prompt_end] + list(range(start, start + len(resp) - 1))
            targets += resp
            row_of += [r] * len(resp)
            ids += resp
            pos += list(range(prompt_len, prompt_len + len(resp)))
            segment += [seg] * len(resp)
            owner += [prompt_seg] * len(resp)
    seg_t, owner_t = torch.tensor(segment), torch.tensor(owner)
    length = len(ids)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    visible = (seg_t[None, :] == seg_t[:, None]) | (seg_t[None, :] == owner_t[:, None])
    full = [len(p.prompt_ids) + len(r_ids) for p, _, r_ids in rows]
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]),
            "attention_mask": (causal & visible)[None, None], "predict": torch.tensor(predict),
            "targets": torch.tensor(targets), "row": torch.tensor(row_of), "rows": len(rows),
            "truncated": any(m > max_length for m in full)}
