"""The sandbox provider: a local payment platform (server in `app`) and tempay's adapter for it."""
