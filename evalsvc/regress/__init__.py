"""Regression checks between two checkpoints: gates files and their evaluation on paired scores."""
