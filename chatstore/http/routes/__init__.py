"""One module of routes per section of the contract."""
