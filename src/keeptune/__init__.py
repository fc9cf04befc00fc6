"""keeptune: LoRA fine-tuning that proves the model kept its old skills."""
__version__ = "0.1.0"
