"""The swarm: the P2P runtime and the protocol every node speaks. Imports nothing of `nodes`.

Membership and roles
    manifest.py     the signed run manifest: the typed run config and its defaults, declared once
    trust.py        the owner's signed manifest updates (who may train or roll out, and from when)
    records.py      NodeInfo: the small signed, expiring record a node publishes in the DHT
    validator.py    the DHT record validator (only a run's keys, only owner-signed records)
    membership.py   joining the DHT, publishing our record, reading the live swarm
    hardware.py     what this machine can do (advertised in NodeInfo)
    roles.py        role assignment, a pure function of the live records; `trainers_of`

The protocol
    rejections.py   the one set of rejection reasons and the `Rejection` exception family
    messages.py     the small wire messages (status, verdict, adapter request, bundle header)
    chunk.py        the trajectory chunk wire type, its strict decoder and its shape limits
    sync.py         the sync rules: staleness, demand, lookahead, retention (pure functions)
    versions.py     signed adapter-version records (in-toto entries of the provenance log)
    provenance/     the log of entries (RFC 6962), checkpoints and witnesses, its sync, audit, export
    transport/      request/response behind one interface: hivemind P2P streams, or in memory
    adapters/       adapter distribution: files (PEFT dir), delta (exact, compressed), bundle
                    (wire form), store (verified versions on disk), peers (whom to ask, with
                    backoff), fetch (ask holders until one verifies)

Where to look: the staleness rule is `sync.lag_rejection`; what a chunk looks like on the wire
is `chunk.py`; whom a rollout asks for an adapter is `adapters/peers.rank_holders`; a link model
plugs in behind `transport.Transport`.
"""
