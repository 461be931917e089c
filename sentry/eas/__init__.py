"""The sans-IO EAS protocol core: WBXML, request parsing, responses.

Nothing in this package performs I/O or imports asyncio/aiohttp.
"""
