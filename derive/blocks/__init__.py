"""Registries of small symbolic rules: activations, losses, optimizers."""
