"""croma: cross-modal few-shot generalization by meta-alignment (CROMA) in PyTorch."""

__version__ = "0.1.0"
