"""TLS for the listeners: server contexts that can be replaced while the broker runs."""
