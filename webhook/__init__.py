"""The webhook service: provider callbacks in, Temporal signals out."""
