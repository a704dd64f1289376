"""hubdelta: find Hugging Face Hub finetunes that behave alike, by their Delta Activations."""

__version__ = "0.1.0"
