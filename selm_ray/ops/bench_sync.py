"""Weight sync alone: one vLLM engine, new versions published to it, the learner's side (gather +
pack + object store put) and the engine's (object store get + load) timed apart.

    python -m selm_ray.ops.bench_sync [--model smollm2-135m-instruct] [--rank 8] [--repeats 3] [--full]

Default: a LoRA run's two ways (engine with LoRA enabled): full weights with the adapter merged
in, and the adapter alone. ``--full``: full fine-tuning (no LoRA; a plain engine), what the
default configs publish.

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
    ap.add_argument("--full", action="store_true", help="full fine-tuning: plain weights, plain engine")
    args = ap.parse_args(argv)
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process, as our CPU actors run it
    from selm_ray.engines.adapters import adapter_config, vllm_max_lora_rank
    from selm_ray.engines.models import resolve_model
    from selm_ray.engines.transfer import pack_state_dict
    from selm_ray.engines.vllm_engine import EngineOptions, VLLMEngine
    from selm_ray.learner.gather import adapter_state_dict, full_state_dict, without_tied_copies

    path = resolve_model(args.model)
    # the object store, as runs use it; address="local": a private cluster, never one an earlier
    # `ray start` left (joining one refuses num_cpus)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    rank = 0 if args.full else vllm_max_lora_rank(args.rank)
    engine = VLLMEngine(EngineOptions(path, "float32", 512, max_lora_rank=rank))
    results = {}
    for kind in (("full",) if args.full else ("merged", "adapter")):
        pack, load, nbytes = [], [], 0
        for i in range(args.repeats):
            if kind == "full":
                torch.manual_seed(i)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1 + 1e-3 * torch.randn(()))  # a new version of every weight
            else:
                model = _peft(path, args.rank, i)
            t0 = time.time()
            if kind == "adapter":
                packed = pack_state_dict(adapter_state_dict(model), adapter_config(model.peft_config["default"]))
            else:
                # as a run publishes them: a tied output layer is not sent (TrainEngine.publish_state_dict)
                packed = pack_state_dict(without_tied_copies(model, full_state_dict(model, lora=kind == "merged")))
            ref = ray.put(packed)
            pack.append(time.time() - t0)
            t1 = time.time()
            received = ray.get(ref)  # zero-copy numpy views of the object store, as an engine actor gets them
            engine.update_weights(received)
            load.append(time.time() - t1)
            nbytes = packed.nbytes()
            del ref, received
        params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        total = statistics.median(p + ld for p, ld in zip(pack, load))
        results[kind] = {"bytes": nbytes, "pack_s": statistics.median(pack), "load_s": statistics.median(load),
                         "seconds": total, "seconds_per_135M_params": total * 135e6 / params}
        print(f"{kind:8s} {nbytes / 2**20:8.1f} MiB  gather+pack+put {results[kind]['pack_s']:.3f} s  "
              f"get+load {results[kind]['load_s']:.3f} s  = {total:.3f} s "
              f"({results[kind]['seconds_per_135M_params']:.3f} s per 135M params; median of {args.repeats})",
              flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
