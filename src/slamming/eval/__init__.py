"""slamming.eval."""
