"""Why peer input was refused: one enumerated set of reasons, one exception family.

Every refusal of something a peer sent (a DHT record, an adapter version, a trajectory chunk, a
P2P request) raises a `Rejection` carrying one `Reason`. The reason's value is the short counter
name that logs, metrics.jsonl, `status.json` and P2P replies use, so an operator can grep one
word from the wire to the dashboard. (hivemind's `proto/averaging.proto` MessageCode is the model.)

    ValueError
    └── Rejection                  peer input refused; `.reason` (a Reason), `.detail` for logs
        ├── RecordRejected         a NodeInfo record in the DHT          (swarm.records, validator)
        ├── VersionRejected        an adapter version or its bundle      (swarm.versions, adapters)
        ├── ChunkRejected          a trajectory chunk                    (swarm.chunk, trainer intake)
        ├── RequestRejected        a P2P request refused at the door     (swarm.transport)
        └── UpdateRejected         a manifest update (new trust keys)    (swarm.trust)
"""
from __future__ import annotations

import enum
import re

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Reason(str, enum.Enum):
    # -- any message ------------------------------------------------------------------------
    OVERSIZE = "oversize"  # more bytes than the message's limit; not read past the limit
    FORMAT = "format"  # bytes that are not the container they claim to be (framing, safetensors)
    SCHEMA = "schema"  # a field missing, extra, of the wrong type or out of range
    WRONG_RUN = "wrong_run"  # belongs to another run manifest
    BAD_SIGNATURE = "bad_signature"  # signature missing or not valid for the claimed key
    # -- DHT records ------------------------------------------------------------------------
    UNKNOWN_KEY = "unknown_key"  # a DHT key this run does not use
    WRONG_OWNER = "wrong_owner"  # the record describes another key than the one that signed it
    WRONG_PEER_ID = "wrong_peer_id"  # the record's peer id is not the signing key's libp2p peer id
    EXPIRY_MISMATCH = "expiry_mismatch"  # DHT expiration differs from the signed expires_at
    NOT_MEMBER = "not_member"  # key not in a closed swarm's rollout_keys / trainer_keys
    # -- adapter versions -------------------------------------------------------------------
    WRONG_SIGNER = "wrong_signer"  # signed by a key the role function does not name as trainer
    WRONG_VERSION = "wrong_version"  # a different version than the one asked for
    ROLLBACK = "rollback"  # not newer than the version already held
    FORK = "fork"  # does not continue the chain held (parent digest differs)
    DIGEST = "digest"  # weights, config, delta or GGUF do not match the signed digest
    UNLOGGED = "unlogged"  # a version whose entry is not in our verified provenance log
    EQUIVOCATION = "equivocation"  # a second, different entry for a version the log already holds
    INCONSISTENT = "inconsistent"  # a checkpoint or proof that does not extend the history we trust
    UNKNOWN_UPDATE = "unknown_update"  # names a manifest update we do not hold (yet)
    # -- trajectory chunks ------------------------------------------------------------------
    SEALED = "sealed"  # HPKE envelope cannot be opened by us
    UNKNOWN_SENDER = "unknown_sender"  # sealed by a key that is not a live member
    WRONG_PRODUCER = "wrong_producer"  # the chunk names another producer than its signer
    UNSUPPORTED = "unsupported"  # a wire schema version we do not speak
    ID = "id"  # chunk or producer id malformed
    DTYPE = "dtype"  # a tensor of the wrong dtype
    SHAPE = "shape"  # offsets, lengths or counts inconsistent
    LIMIT = "limit"  # more groups, samples or tokens than the manifest allows per chunk
    VOCAB = "vocab"  # a token id outside the model's vocabulary
    LOGPROBS = "logprobs"  # a log-prob that is not finite or is > 0
    EOS = "eos"  # tokens after a stop token
    WRONG_SETTINGS = "wrong_settings"  # task or sampling settings differ from the manifest
    REPLAY = "replay"  # a chunk id already accepted
    FUTURE_VERSION = "future_version"  # made with a version the trainer has not published
    STALE = "stale"  # policy lag over the staleness bound S (or != 0 in sequential mode)
    DISHONEST = "dishonest"  # claimed log-probs do not reproduce under the claimed version
    # -- the door (P2P requests) ------------------------------------------------------------
    NOT_TRAINER = "not_trainer"  # asked a node that is not (yet) training
    BUSY = "busy"  # the in-flight byte budget (per peer or global) is spent: retry later
    RATE_LIMITED = "rate_limited"  # the peer sent requests faster than its fair share
    TIMEOUT = "timeout"  # the request was not delivered within its deadline

    def __str__(self) -> str:
        return self.value


# A chunk refused for one of these stays with its producer, which offers it again later: the
# refusal says "not now" (not training yet, out of budget, or the sender's membership record not
# seen yet, e.g. just after a partition healed), never "this chunk is bad".
RETRY_LATER = frozenset({Reason.NOT_TRAINER, Reason.BUSY, Reason.RATE_LIMITED, Reason.UNKNOWN_SENDER})


class Rejection(ValueError):
    """Peer input refused; `reason` names the counter it is counted under, `detail` is for logs."""

    def __init__(self, reason: Reason | str, detail: str = ""):
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)


class RecordRejected(Rejection):
    """A DHT record failed verification or its schema."""


class VersionRejected(Rejection):
    """An adapter version (record or bundle) failed verification."""


class ChunkRejected(Rejection):
    """A trajectory chunk refused: at decoding or at the trainer's door."""


class RequestRejected(Rejection):
    """A P2P request refused before its handler ran (size, budget, rate)."""


class UpdateRejected(Rejection):
    """A manifest update (the owner's change of trusted keys) failed verification."""
