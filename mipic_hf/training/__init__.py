"""Training: the Trainer and its arguments, the module it wraps (encoder + objective), gradient caching, the
collator, LoRA, the teacher, the output rotation, the evaluation callback."""
