"""Plots and the report, rendered from stored records alone."""
