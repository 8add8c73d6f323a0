"""Apps for test_one_loop.py and test_one_loop_testing.py: WSGI apps that keep
async clients (Elasticsearch, aiohttp, redis.asyncio) across requests, and
the stand-in services they talk to (services.py)."""
