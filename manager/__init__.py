"""kubevine.manager — the manager service: scheduler core, state store, file store, I/O shell.

The manager is the only writer of workflow state. Its decisions are made by a pure core
(:mod:`kubevine.manager.core`) that takes events and returns instructions; the service
(:mod:`kubevine.manager.service`) moves bytes between ZeroMQ, the core and the state store.
"""
