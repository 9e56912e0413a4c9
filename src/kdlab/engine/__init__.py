"""The one training loop (on Hugging Face Accelerate) and what it needs: checkpoints, evaluation, logging."""
