"""Unit tests: the sans-io layers, the configuration, the PKI and the instance files."""
