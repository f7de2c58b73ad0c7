"""Kinema World: a procedural 2D world with known physics and ground truth."""
