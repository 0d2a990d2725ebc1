"""The Stripe provider: Checkout Sessions for payments, Refunds, signed webhook events.

Imported as `providers.stripe` (absolute imports only): `import stripe` anywhere still means
the Stripe SDK, which tempay uses only in its tests, as the reference for signatures.
"""
