"""The admin listener: metrics, health, and (under /api/) the admin REST API."""
