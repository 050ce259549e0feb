"""Pieces of pre-training (``python -m workflows.pretrain``, ``workflows.ablate``, ``workflows.demo``): the recipe's
config, the shard stream, the DeepSpeed engine, the Ray Train worker loop, curricula, fine-tuning, run guards and
metrics."""
