"""The API gateway: authenticated control of the bot, market-data and trading views, and a
live WebSocket, all built from the services' published topics and the api's own schema."""
