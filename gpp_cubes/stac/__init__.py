"""STAC access: providers, GDAL settings, search, loading and readers."""
