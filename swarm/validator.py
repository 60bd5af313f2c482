"""DHT record validation: only a run's own keys, only owner-signed NodeInfo records.

hivemind calls `validate` inside the DHT process whenever a peer asks us to store a record and
whenever a peer returns one to us. We accept exactly the keys this run uses; under the
`nodes` key each subkey is an Ed25519 public key and its value must be a NodeInfo signed by
that key, for this run, with the signed expiry equal to the DHT expiry. Rejections are counted
by reason in shared memory, so the node process can report them although the check runs in the
DHT child process.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable

from hivemind.dht.routing import DHTID
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils.serializer import MSGPackSerializer

from swarm.records import verify_record
from swarm.rejections import Reason, RecordRejected

log = logging.getLogger(__name__)

REASONS = tuple(Reason)  # slots of the shared-memory counters


def dht_key_id(key: str) -> bytes:
    return DHTID.generate(source=key).to_bytes()


class RunRecordValidator(RecordValidatorBase):
    """Validates every record of one run. `checks` maps a DHT key to its per-record check."""

    def __init__(self, run_digest: str, nodes_key: str, extra_checks: dict[str, Callable] | None = None):
        self.run_digest = run_digest
        self._checks: dict[bytes, Callable[[DHTRecord], None]] = {dht_key_id(nodes_key): self._check_nodeinfo}
        for key, check in (extra_checks or {}).items():
            self._checks[dht_key_id(key)] = check
        self._counts = mp.Array("q", len(REASONS), lock=True)

    def validate(self, record: DHTRecord) -> bool:
        check = self._checks.get(record.key)
        try:
            if check is None:
                raise RecordRejected(Reason.UNKNOWN_KEY, "key is not one of this run's keys")
            check(record)
            return True
        except RecordRejected as e:
            self._count(e.reason)
            log.warning("rejected DHT record: %s", e)
            return False
        except Exception as e:  # noqa: BLE001 - a validator must never take the DHT down
            self._count(Reason.SCHEMA)
            log.warning("rejected DHT record: schema: %r", e)
            return False

    def _check_nodeinfo(self, record: DHTRecord) -> None:
        try:
            owner = MSGPackSerializer.loads(record.subkey)
            envelope = MSGPackSerializer.loads(record.value)
        except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
            raise RecordRejected(Reason.SCHEMA, "subkey or value is not msgpack") from None
        if not isinstance(owner, str):
            raise RecordRejected(Reason.WRONG_OWNER, "subkey is not an owner key")
        verify_record(
            envelope, owner_public_key_hex=owner, run_digest=self.run_digest, expiration_time=record.expiration_time
        )

    def _count(self, reason: Reason) -> None:
        with self._counts.get_lock():
            self._counts[REASONS.index(reason)] += 1

    def rejections(self) -> dict[str, int]:
        with self._counts.get_lock():
            return {reason.value: n for reason, n in zip(REASONS, self._counts) if n}

    def merge_with(self, other: RecordValidatorBase) -> bool:
        return False
