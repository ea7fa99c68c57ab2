"""`vnet lab`: declarative topologies in network namespaces."""
