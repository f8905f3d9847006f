"""Industry templates: the shipped catalogue, tenant templates, compliance packs, provenance."""
