"""The admin listener: metrics, health, and (under /api/) the admin REST API.

Modules, top down:

- ``api``: the route table of every admin module, the request pipeline and
  the JSON error answers; ``auth``: the bearer-token middleware.
- ``associations`` (the ActiveSync list and its actions, with ``listing``
  and ``actions``), ``directory`` (users), ``devices`` (managed devices),
  ``push`` (Exchange settings, labels), ``prefs`` (preferences, pools),
  ``audit``.
- ``schema``: routes, request specs and the OpenAPI document from one table;
  ``views``: JSON views of the model and their schemas; ``context``: what
  handlers work with, and the one way to apply a change; ``errors``.
- ``cli`` (+ ``cli_base``, ``cli_registry``, ``cli_client``,
  ``cli_format``): ``sentry admin ...`` over the REST API.
- ``health``: ``/metrics``, ``/healthz``, ``/readyz``.

Nothing is imported here, so ``sentry admin`` stays light.
"""
