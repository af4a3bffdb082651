"""Who may connect, publish and subscribe: the CONNECT decision and topic authorization."""
