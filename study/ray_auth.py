"""Ray token authentication for the local Ray a study starts, and how a cluster's token is given.

Ray's GCS, raylets and agents listen on every interface even with the node IP set to 127.0.0.1
(measured with Ray 2.60), and whoever can talk to a GCS can run code as the study's user. Ray's token
authentication is the protection: every Ray process and client must present the cluster's token.

- A local study (no ``--address``): ``private_token`` turns it on (``RAY_AUTH_MODE=token``) with a fresh
  random token in ``RAY_AUTH_TOKEN`` for this driver, which every Ray process it starts inherits; nothing
  is written to disk (Ray's own default would create ``~/.ray/auth_token``, shared by all of the user's
  clusters). A token the user gave (``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) is used instead, and
  an explicit ``RAY_AUTH_MODE=disabled`` is respected (the user's choice; Ray warns).
- A cluster (``--address HOST:PORT``): the cluster's token is given the way Ray reads it, before the
  command: ``RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/path/to/token tgdp-study run SPEC --address ...``
  (or ``RAY_AUTH_TOKEN``); ``ray start --head`` with ``RAY_AUTH_MODE=token`` created it, see
  https://docs.ray.io/en/latest/ray-security/token-auth.html. Nothing here changes the environment then.

``LOOPBACK``: the ``ray.init`` arguments that bind what Ray lets bind to 127.0.0.1 (node IP, dashboard).
"""

from __future__ import annotations

import os
import secrets
import sys

MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
LOOPBACK = {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}


def private_token() -> str:
    """Set up token authentication for a local Ray this process is about to start; returns the mode."""
    mode = os.environ.setdefault(MODE_ENV, "token")
    if mode.lower() == "token" and not os.environ.get(TOKEN_ENV) and not os.environ.get(TOKEN_PATH_ENV):
        os.environ[TOKEN_ENV] = secrets.token_hex(32)
    if "ray._raylet" in sys.modules:  # Ray read its config (auth mode included) from the environment at import:
        from ray._raylet import AuthenticationTokenLoader, Config  # re-read it, as Ray's own test utilities do

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    return mode


__all__ = ["LOOPBACK", "private_token"]
