"""Training: the Trainer and its arguments, the collator, LoRA, the teacher, the output rotation, the evaluation
callback."""
