"""Adapters of the dispatch port: the router and the backends it chooses among."""
