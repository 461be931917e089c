"""The device-facing data path (aiohttp): parse, inspect, decide, refuse or forward.

``app.build_proxy_server`` is the entry point; ``handler`` holds the processing order,
``upstream`` the backend pools, ``longpolls`` the registry used for live revocation.
"""
