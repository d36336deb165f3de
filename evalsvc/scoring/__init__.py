"""Scoring: metric functions on arrays (overcook, distribution, similarity) and the scorers that run them."""
