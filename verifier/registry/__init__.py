"""The Distribution API client: the only code that speaks HTTP (httpx, aiohttp)."""
