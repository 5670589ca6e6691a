"""The LLM repair: the agent fixer, its tool contract and prompts, guards on what it may change, pricing, and the factory."""
