"""Per provider: the merchant account the tests use at its fake (ids, keys, secrets) and an
adapter built for it; for the sandbox, the real sandbox server and a merchant receiver."""
