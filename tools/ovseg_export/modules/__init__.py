"""TorchScript-scriptable re-implementations of the ov-seg networks (written from docs/reference-behaviour.md)."""
