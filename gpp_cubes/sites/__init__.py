"""Sites: the station catalogue (one :class:`Site` type every stage accepts), the UTM site
grid, CORINE 2018 and the forest selection rules."""

from gpp_cubes.sites.catalog import Site, as_site, get_site, load_sites, point_site

__all__ = ["Site", "as_site", "get_site", "load_sites", "point_site"]
