"""How requests are served: the ASGI application and its invocation views, the in-memory endpoint
table, rate limits, the upstream HTTP client, the Redis client, the worker and the supervisor."""
