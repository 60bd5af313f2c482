"""The trainer: GRPO math (grpo), the LoRA policy it steps (policy), adapter versions on disk (adapters).

Heavy imports (torch, transformers, peft) stay inside the submodules.
"""
