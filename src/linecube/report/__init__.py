"""Figures and the interactive explorer."""
