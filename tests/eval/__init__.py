"""Tests of slamming.eval."""
