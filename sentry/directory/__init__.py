"""The directory side: users synced from LDAP (``ldap``: the blocking reader run in a
worker thread; ``service``: the schedule, on-demand syncs and their state).

Layer: ``service`` is shell code beside ``proxy/`` and ``admin/`` (asyncio,
structlog, the injected metrics); ``ldap`` does blocking I/O only (like a store
implementation); the mapping and the plan are pure (``policy.dirmap``,
``policy.dirsync``).
"""
