"""Other sensors and drivers: Sentinel-1, MODIS LST, clear-sky radiation."""
