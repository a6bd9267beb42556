"""Emulators of every outside system, the demo dataset and fault injection.

The sandbox is where the product meets SafetyAmp, Samsara, Microsoft Graph/Entra ID and
Viewpoint Vista before production (the emulated facts, their public sources and the
assumptions are listed in docs/emulated-apis.md). Modules:

* ``server``: ``start_sandbox(dir, size, faults, seed) -> RunningSandbox`` (the entry point)
* ``safetyamp``, ``samsara``, ``graph``: one Flask app per vendor
* ``wsgi``: request log, fault injection and dropped connections shared by all emulators
* ``faults``: ``SANDBOX_FAULTS`` parsing and the seeded fault decisions
* ``store``: the targets' durable state (``open_store(dir)``) and the request log
* ``seed``, ``dataset``, ``tls``: seeding a directory (Viewpoint SQLite, target data, CA)
* ``mutate``: realistic source changes between runs
* ``testing``: request helpers for tests; ``__main__``: the ``python -m sandbox`` CLI

Nothing here is imported by the product at import time; ``--sandbox`` wiring imports
``sandbox.server`` lazily.
"""
