"""Identity keys, signed envelopes (DSSE), sealing to recipients (HPKE) and canonical JSON.

Imports nothing else of ours, nor hivemind or torch. Import the submodules directly:
``crypto.identity``, ``crypto.envelope``, ``crypto.sealing``, ``crypto.canonical``, ``crypto.errors``.
"""
