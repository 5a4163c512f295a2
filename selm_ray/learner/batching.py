"""Preference pairs -> padded token tensors for one forward pass over chosen, rejected and y_ref."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from selm_ray.core.losses import scattered_logps
from selm_ray.core.data import render_prompt
from selm_ray.core.records import PreferencePair
from selm_ray.core.sft_data import SFTExample


def encode(tokenizer: Any, prompt_text: str, response: str, max_length: int,
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
    encoded = [encode(tokenizer, p.prompt_text, text, max_length, p.prompt_ids, ids) for p, text, ids in rows]
    full = [len(p.prompt_ids) + len(ids) for p, _, ids in rows]
    return {**pad_rows(tokenizer, encoded), "truncated": any(n > max_length for n in full)}


def pad_rows(tokenizer: Any, encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """Right-padded input_ids / attention_mask / loss_mask (N, T) of ``encode`` rows, ``first``:
    the position predicting the earliest scored token (logits before it are never needed), and the
    scored tokens listed one by one as ``pack`` lists them (``predict``, ``targets``, ``row``, ``rows``)."""
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (row, m) in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        mask[i, : len(row)] = torch.tensor(m)
    first = max(0, int(mask.argmax(dim=1).min().item()) - 1)
    # position t - 1 predicts token t; position 0 predicts nothing (encode never scores token 0
    # unless the prompt is empty, and then there is no logit for it)
    rows, positions = mask[:, 1:].nonzero(as_tuple=True)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask, "first": first,
            "predict": torch.stack([rows, positions - first], dim=1), "targets": ids[rows, positions + 1],
            "row": rows, "rows": len(encoded)}


def collate_sft(tokenizer: Any, examples: Sequence[SFTExample], max_length: int) -> dict[str, Any]:
    """The SFT stage's batch: answer tokens + EOS scored, the prompt never."""
    return pad_rows(tokenizer, [encode(tokenizer, render_prompt(tokenizer, e.messages), e.response, max_length)
                                for e in examples])


def row_logps(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """(N,) summed response log-probs per row from ``batch_logits`` (one logit per scored token)."""
    return scattered_logps(logits, batch["targets"], batch["row"], batch["rows"],
                           batch.get("also_token"), batch.get("also_row"))


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


def _pair_row(encoded: list[tuple[list[int], list[int]]]) -> tuple[list[int], list[int], list[int], list, dict]:
    """One pair's row [x | y_w | y_l (| y_ref)] from its rows' encodings (which share the prompt).

    Returns ids, positions, segment per token (0 = prompt, s = s-th response), the scored
    tokens as (predicting position, target id, response index), and ``repeats``: response index ->
    the earlier response with the same tokens (y_ref that is also y_w or y_l). A repeat adds no
    tokens to the row: the logits of its twin score it.
    """
    first_ids, first_mask = encoded[0]
    prompt_len = first_mask.index(1) if 1 in first_mask else len(first_ids)
    ids, pos, seg = first_ids[:prompt_len], list(range(prompt_len)), [0] * prompt_len
    scored, seen, repeats = [], {}, {}
    for s, (row_ids, _) in enumerate(encoded):
        resp, start = row_ids[prompt_len:], len(ids)
        if tuple(resp) in seen:
            repeats[s] = seen[tuple(resp)]
            continue
        seen[tuple(resp)] = s
        # the prompt's last position predicts the first token, then each token the next
        predictors = [prompt_len - 1] + list(range(start, start + len(resp) - 1))
        scored += [(t, y, s) for t, y in zip(predictors, resp)]
        ids, pos, seg = ids + resp, pos + list(range(prompt_len, prompt_len + len(resp))), seg + [s + 1] * len(resp)
    return ids, pos, seg, scored, repeats


def pack(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int,
         with_ref_response: bool) -> dict[str, Any]:
    """One row per PAIR with its prompt once: [x y_w y_l y_ref], right-padded.

    Every response attends causally to its own tokens and its prompt only, and its positions
    continue from the prompt's end, so each response is scored exactly as in its own padded row
    (``collate``) while the prompt is computed once instead of two or three times. A response
    that repeats an earlier one of its pair (y_ref that is also y_w or y_l,
    ``generation.ref_in_candidates``) is computed once and scored into both output rows. (One row for
    the whole batch would cut padding too, but attention is quadratic in row length and a dense
    kernel does not skip masked blocks: per-pair rows are the cheaper trade on CPU.)

    Returns input_ids, position_ids (B, W), attention_mask (B, 1, W, W) bool (True = may attend),
    ``first`` as collate, and the scored tokens: ``predict`` (M, 2) (row, position) of the logit,
    ``targets`` (M,), ``row`` (M,) the output row in collate order; ``rows`` N, ``truncated``;
    ``also_token`` / ``also_row`` (K,): scored token i also counts for output row r (repeats).
    """
    rows = _rows(pairs, with_ref_response)
    encoded = [encode(tokenizer, p.prompt_text, text, max_length, p.prompt_ids, ids) for p, text, ids in rows]
    n = len(pairs)
    built = [_pair_row(encoded[k::n]) for k in range(n)]
    width = max(len(ids) for ids, _, _, _, _ in built)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    segments = torch.full((n, width), -1, dtype=torch.long)  # padding: its own segment, seen by no token
    for k, (ids, pos, seg, _, _) in enumerate(built):
        input_ids[k, : len(ids)], positions[k, : len(ids)] = torch.tensor(ids), torch.tensor(pos)
        segments[k, : len(ids)] = torch.tensor(seg)
    same = segments[:, :, None] == segments[:, None, :]
    sees_prompt = (segments[:, None, :] == 0) & (segments[:, :, None] >= 0)
    mask = (same | sees_prompt) & torch.ones(width, width, dtype=torch.bool).tril()
    scored = [(k, t, y, s * n + k) for k, (_, _, _, sc, _) in enumerate(built) for t, y, s in sc]
    # a repeated response's output row sums the scored tokens of its twin's row
    where = {}
    for i, (_, _, _, r) in enumerate(scored):
        where.setdefault(r, []).append(i)
    also = [(i, s * n + k) for k, (_, _, _, _, rep) in enumerate(built) for s, twin in rep.items()
            for i in where.get(twin * n + k, [])]
    first = min(t for _, t, _, _ in scored) if scored else 0
    full = [len(p.prompt_ids) + len(r_ids) for p, _, r_ids in rows]
    return {"input_ids": input_ids, "position_ids": positions, "attention_mask": mask[:, None],
            "first": first, "predict": torch.tensor([(k, t - first) for k, t, _, _ in scored]).reshape(-1, 2),
            "targets": torch.tensor([y for _, _, y, _ in scored], dtype=torch.long),
            "row": torch.tensor([r for _, _, _, r in scored], dtype=torch.long), "rows": len(rows),
            "also_token": torch.tensor([i for i, _ in also], dtype=torch.long),
            "also_row": torch.tensor([r for _, r in also], dtype=torch.long),
            "truncated": any(m > max_length for m in full)}
