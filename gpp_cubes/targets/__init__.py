"""GPP targets: FLUXNET files and climate-induced extremes."""
