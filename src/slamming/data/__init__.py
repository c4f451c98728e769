"""slamming.data."""
