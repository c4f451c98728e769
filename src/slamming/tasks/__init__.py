"""slamming.tasks."""
