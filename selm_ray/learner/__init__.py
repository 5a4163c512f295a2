"""The learner: pair batching, the Ray Train loop (DeepSpeed ZeRO or DDP), weight publishing."""
