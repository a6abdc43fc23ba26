"""Who may watch and who may drive: credentials, roles and grants, the control lease.

- `tokens`: how tokens are made and what is stored of them (HMAC-SHA256 under a hub key);
- `credentials`: the credentials store (users, grants, token digests), SQLite of its own;
- `permissions`: roles, grants, `Principal`;
- `leases`: the control lease table;
- `service`: `Authenticator`, the hub's view of who each connection is, kept current;
- `guard`: the checks at the handshake and on every message, and the lease commands;
- `sessions`: the dashboard's sessions (a browser's cookie) and one-time login codes;
- `web`: the Origin check and the REST checks, as aiohttp middleware.
"""

from .credentials import (
    CredentialsError,
    CredentialStore,
    Snapshot,
    SqliteCredentials,
    TokenRecord,
    User,
)
from .permissions import ANONYMOUS, PERSON_ROLES, Principal, Role
from .service import Authenticator, check_startup, is_loopback

__all__ = [
    "ANONYMOUS",
    "PERSON_ROLES",
    "Authenticator",
    "CredentialStore",
    "CredentialsError",
    "Principal",
    "Role",
    "Snapshot",
    "SqliteCredentials",
    "TokenRecord",
    "User",
    "check_startup",
    "is_loopback",
]
