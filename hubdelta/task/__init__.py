"""Task search (``hubdelta task``): a few examples → a few-shot LoRA → its Delta Activations → nearest models."""
