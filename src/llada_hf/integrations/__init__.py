"""Integrations with other libraries (bitsandbytes quantization, PEFT, and guards against TRL's trainers and lm-eval's
`hf` model, which would treat our models as autoregressive)."""
