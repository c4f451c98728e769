"""slamming: train speech language models the Slam way, as a Lightning application."""

__version__ = "0.1.0"
