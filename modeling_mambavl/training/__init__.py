"""Training utilities shared by the example scripts: checkpoints, fault injection."""
