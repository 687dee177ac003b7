"""Site catalogue, grids, CORINE and the forest selection."""
