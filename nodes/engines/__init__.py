"""Inference engines behind one interface (`base.Engine`): transformers and llama.cpp."""
from nodes.engines.base import Engine, EngineError, Sample, SamplingParams, encode_prompt, make_engine

__all__ = ["Engine", "EngineError", "Sample", "SamplingParams", "encode_prompt", "make_engine"]
