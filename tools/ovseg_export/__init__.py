"""ovseg-export: turns official ov-seg checkpoints into TorchScript bundles (models/BUNDLE_FORMAT.md)."""
