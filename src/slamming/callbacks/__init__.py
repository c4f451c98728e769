"""slamming.callbacks."""
