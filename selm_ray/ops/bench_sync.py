"""Weight sync alone: one vLLM engine (LoRA enabled), new versions published to it as full weights
and as a LoRA adapter, the learner's side (gather + pack) and the engine's (load) timed apart.

    python -m selm_ray.ops.bench_sync [--model smollm2-135m-instruct] [--rank 8] [--repeats 3]

Prints seconds per publication and per 135M parameters (the project's target: <= 1 s on CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _peft(path: str, rank: int, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)  # a trained-looking adapter (peft starts B at zero)
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process, as our CPU actors run it
    from selm_ray.engines.adapters import adapter_config, vllm_max_lora_rank
    from selm_ray.engines.models import resolve_model
    from selm_ray.engines.transfer import pack_state_dict
    from selm_ray.engines.vllm_engine import EngineOptions, VLLMEngine
    from selm_ray.learner.gather import adapter_state_dict, full_state_dict

    path = resolve_model(args.model)
    engine = VLLMEngine(EngineOptions(path, "float32", 512, max_lora_rank=vllm_max_lora_rank(args.rank)))
    results = {}
    for kind in ("merged", "adapter"):
        pack, load, nbytes = [], [], 0
        for i in range(args.repeats):
            model = _peft(path, args.rank, i)
            t0 = time.time()
            if kind == "adapter":
                packed = pack_state_dict(adapter_state_dict(model), adapter_config(model.peft_config["default"]))
            else:
                packed = pack_state_dict(full_state_dict(model, lora=True))
            pack.append(time.time() - t0)
            load.append(engine.update_weights(packed))
            nbytes = packed.nbytes()
        params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        total = statistics.median(p + ld for p, ld in zip(pack, load))
        results[kind] = {"bytes": nbytes, "pack_s": statistics.median(pack), "load_s": statistics.median(load),
                         "seconds": total, "seconds_per_135M_params": total * 135e6 / params}
        print(f"{kind:8s} {nbytes / 2**20:8.1f} MiB  pack {results[kind]['pack_s']:.3f} s  "
              f"load {results[kind]['load_s']:.3f} s  = {total:.3f} s "
              f"({results[kind]['seconds_per_135M_params']:.3f} s per 135M params; median of {args.repeats})",
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
