"""The P2P runtime: run manifest, DHT membership, hardware adverts, role assignment."""
