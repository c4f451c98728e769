"""slamming.models."""
