"""The trainer: the door's checks (intake), GRPO math (grpo), the LoRA policy it steps (policy),
checkpoints, and the worker that ties them together and publishes signed versions (worker).

Heavy imports (torch, transformers, peft) stay inside the submodules.
"""
