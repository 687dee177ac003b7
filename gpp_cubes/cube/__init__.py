"""The feature cube: assembly, zarr store and STAC publication."""
