"""HTTP and WebSocket routes, one module per area of the seed's API."""
