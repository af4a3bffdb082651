"""certmq: an MQTT broker whose heart is X.509 certificate-based device authentication."""

__version__ = "0.1.0"
