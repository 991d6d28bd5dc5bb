"""Integrations with other libraries (bitsandbytes quantization, PEFT)."""
