"""Keys, certificates, CA, certificate profiles and validation."""
