"""The commands behind the CLI and the Python API: finetune, distill, evaluate, inspect, demo."""
