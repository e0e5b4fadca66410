"""Console scripts of the offline training module; each module's ``entry_point`` is one command."""
