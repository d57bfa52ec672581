"""Data sets: sparse matrices, the text format, specs, the manifest and cache, synthetic presets and twins."""
