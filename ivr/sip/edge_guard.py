"""The edge of the SIP endpoint: who may send us requests, and how many.

Every request is screened here before the endpoint makes any transaction,
dialog, task, RTP port or database row for it (``EdgeGuard.screen``):

- a request inside one of our calls (a known dialog, a retransmitted INVITE,
  its ACK or CANCEL) always passes: an operator's phone may hang up from an
  address that is not the trunk's, and a real call is never cut at the edge;
- a source outside ``[sip] allow`` is refused: 403, or nothing (``refuse =
  "silence"``); a source refused faster than its request rate gets nothing;
- a source over its request rate (a token bucket per source address, in a
  table of bounded size) or over its calls in progress gets 503 with
  Retry-After, or nothing (``over_limit = "silence"``);
- methods we do not serve (REGISTER, SUBSCRIBE, MESSAGE...) get a stateless 405;
- with ``[sip.inbound_auth]``, a new INVITE without valid digest credentials
  (RFC 7616 / RFC 2617, MD5 or SHA-256, qop=auth or none) gets a stateless 401
  challenge, wrong credentials 403.

Refusals are answered without state (no transaction: a retransmission is
answered again, as cheaply) and logged without flooding the log: the first
refusal of a source at once, then one summary line per source per interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiosipua import SipRequest
from aiosipua.header_codec import parse_auth

from ivr.config import InboundAuthSettings, SipSettings
from ivr.sip.messages import ALLOWED_METHODS

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
REFUSE_MODES: tuple[str, ...] = ("403", "silence")
OVER_LIMIT_MODES: tuple[str, ...] = ("503", "silence")
ALLOW_HEADER = ALLOWED_METHODS
SERVED_METHODS = frozenset(method.strip() for method in ALLOWED_METHODS.split(","))
DIGEST_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}


@dataclass(frozen=True)
class EdgePolicy:
    """What the edge lets in; built from [sip] (``from_settings``)."""

    allow: tuple[str, ...] = LOOPBACK
    refuse: str = "403"  # "403" | "silence": for a source outside allow
    requests_per_second: float = 100.0  # per source address, sustained
    request_burst: int = 200  # per source address, at once
    calls_per_source: int = 0  # calls in progress per source address; 0 = no limit of its own
    over_limit: str = "503"  # "503" | "silence": for a source over a limit
    auth: InboundAuthSettings | None = None
    sources_tracked: int = 4096  # token buckets kept (least recently seen dropped first)
    log_interval: float = 10.0  # seconds between summary lines per refused source

    @classmethod
    def from_settings(cls, sip: SipSettings) -> EdgePolicy:
        return cls(
            allow=sip.allow,
            refuse=sip.refuse,
            requests_per_second=sip.requests_per_second,
            request_burst=sip.request_burst,
            calls_per_source=sip.calls_per_source,
            over_limit=sip.over_limit,
            auth=sip.inbound_auth,
        )


@dataclass(frozen=True)
class Refusal:
    """What the edge says to a request it refuses; ``status`` None = nothing."""

    reason: str  # not_allowed, rate, calls, method, auth_challenge, bad_credentials
    status: int | None
    response_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    to_tag: bool = False  # a final answer to an INVITE carries a To tag


class AllowList:
    """Source addresses in a set of networks; answers cached (bounded)."""

    def __init__(self, networks: tuple[str, ...], cache_size: int = 4096) -> None:
        self._networks: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(n) for n in networks)
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def allows(self, host: str) -> bool:
        known = self._cache.get(host)
        if known is not None:
            return known
        verdict = self._check(host)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[host] = verdict
        return verdict

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class SourceBuckets:
    """A token bucket per source address, in a table of at most ``capacity``
    sources: a flood from ever new (spoofed) addresses cannot grow memory."""

    def __init__(self, rate: float, burst: int, capacity: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._capacity = capacity
        self._clock = clock
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def take(self, host: str) -> bool:
        """Spend one token of ``host``; False when it has none left."""
        now = self._clock()
        entry = self._table.get(host)
        if entry is None:
            entry = [self._burst, now]
            self._table[host] = entry
            if len(self._table) > self._capacity:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(host)
            entry[0] = min(self._burst, entry[0] + (now - entry[1]) * self._rate)
            entry[1] = now
        if entry[0] >= 1.0:
            entry[0] -= 1.0
            return True
        return False


class SourceCalls:
    """Calls in progress per source address (INVITEs let in, until their call
    is over). ``live`` names the Call-IDs the endpoint still holds, to drop
    any that ended unseen (looked at no more than once a second, at a limit)."""

    def __init__(self, live: Callable[[], set[str]], clock: Callable[[], float]) -> None:
        self._live = live
        self._clock = clock
        self._source_of: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._checked = float("-inf")

    def started(self, host: str, call_id: str) -> None:
        if call_id in self._source_of:
            return
        self._source_of[call_id] = host
        self._counts[host] += 1

    def ended(self, call_id: str) -> None:
        host = self._source_of.pop(call_id, None)
        if host is None:
            return
        self._counts[host] -= 1
        if self._counts[host] <= 0:
            del self._counts[host]

    def count(self, host: str) -> int:
        return self._counts.get(host, 0)

    def at_limit(self, host: str, limit: int) -> bool:
        if self.count(host) < limit:
            return False
        now = self._clock()
        if now - self._checked >= 1.0:
            self._checked = now
            live = self._live()
            for call_id in [c for c in self._source_of if c not in live]:
                self.ended(call_id)
        return self.count(host) >= limit


class RefusalLog:
    """Refusals logged without flooding the log: a source's first refusal at
    once, then per source one line every ``interval`` seconds with the counts
    by reason; at most ``max_sources`` sources by name, the rest summed."""

    def __init__(self, log: logging.Logger, interval: float, max_sources: int = 256) -> None:
        self._log = log
        self._interval = interval
        self._max_sources = max_sources
        self._pending: dict[str, Counter[str]] = {}
        self._others: Counter[str] = Counter()
        self._other_sources: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def note(self, host: str, reason: str, method: str, answer: str) -> None:
        counts = self._pending.get(host)
        if counts is not None:
            counts[reason] += 1
            return
        if len(self._pending) >= self._max_sources:
            self._others[reason] += 1
            if len(self._other_sources) < 100_000:
                self._other_sources.add(host)
            self._schedule()
            return
        self._pending[host] = Counter()
        self._log.warning(
            "sip: refused %s from %s (%s): %s; further refusals of it summarised every %gs",
            method,
            host,
            reason,
            answer,
            self._interval,
        )
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        quiet = [host for host, counts in self._pending.items() if not counts]
        for host in quiet:
            del self._pending[host]  # the next refusal of it is logged at once
        for host, counts in self._pending.items():
            self._log.warning(
                "sip: refused %d more requests from %s in the last %gs (%s)",
                counts.total(),
                host,
                self._interval,
                _by_reason(counts),
            )
            counts.clear()
        if self._others:
            self._log.warning(
                "sip: refused %d requests from %d other sources in the last %gs (%s)",
                self._others.total(),
                len(self._other_sources),
                self._interval,
                _by_reason(self._others),
            )
            self._others.clear()
            self._other_sources.clear()
        if self._pending:
            self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _by_reason(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())


class DigestCheck:
    """Digest authentication of inbound INVITEs without state: the nonce is
    the time it was made and an HMAC of that time and the source address, so
    any node with the same [sip.inbound_auth] verifies it (a cluster behind a
    proxy), and nothing is kept per challenge."""

    def __init__(
        self, settings: InboundAuthSettings, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.realm = settings.realm
        self._users = dict(settings.users)
        self._lifetime = settings.nonce_lifetime
        self._clock = wall_clock
        pairs = (f"{user}:{password}" for user, password in sorted(self._users.items()))
        material = "\n".join([settings.realm, *pairs])
        self._key = hashlib.sha256(b"12345-ivr nonce\n" + material.encode()).digest()

    def _sign(self, stamp: str, host: str) -> str:
        return hmac.new(self._key, f"{stamp}:{host}".encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self, host: str) -> str:
        stamp = f"{int(self._clock()):x}"
        return f"{stamp}.{self._sign(stamp, host)}"

    def challenge(self, host: str, *, stale: bool = False) -> str:
        nonce = self.nonce(host)
        value = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
        return value + ", stale=true" if stale else value

    def verify(self, request: SipRequest, host: str) -> str:
        """ "ok", "missing" (no credentials for our realm), "stale" (an old or
        foreign nonce: challenge again) or "bad" (wrong user or password)."""
        raw = request.headers.get_first("authorization")
        if not raw:
            return "missing"
        try:
            credentials = parse_auth(raw, credentials=True)
        except (ValueError, IndexError):
            return "bad"
        params = credentials.params
        if credentials.scheme.lower() != "digest" or params.get("realm") != self.realm:
            return "missing"
        nonce = params.get("nonce", "")
        stamp, _, signature = nonce.partition(".")
        try:
            made = int(stamp, 16)
        except ValueError:
            return "stale"
        if not hmac.compare_digest(signature, self._sign(stamp, host)):
            return "stale"
        if not 0 <= self._clock() - made <= self._lifetime:
            return "stale"
        password = self._users.get(params.get("username", ""))
        hasher = DIGEST_HASHES.get(params.get("algorithm", "MD5").upper())
        if password is None or hasher is None:
            return "bad"

        def h(text: str) -> str:
            return hasher(text.encode()).hexdigest()

        ha1 = h(f"{params.get('username')}:{self.realm}:{password}")
        ha2 = h(f"{request.method.upper()}:{params.get('uri', '')}")
        qop = params.get("qop", "")
        if qop:
            if qop.lower() != "auth":
                return "bad"
            nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
            expected = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        else:
            expected = h(f"{ha1}:{nonce}:{ha2}")
        given = params.get("response", "").lower()
        return "ok" if hmac.compare_digest(given, expected) else "bad"


class EdgeGuard:
    """The policy applied to each request before the endpoint spends anything
    on it. ``screen`` says what to refuse; ``call_started``/``call_ended``
    keep the calls in progress per source."""

    def __init__(
        self,
        policy: EdgePolicy,
        log: logging.Logger,
        *,
        live_calls: Callable[[], set[str]] = set,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self._log = log
        self.allow_list = AllowList(policy.allow)
        self.buckets = SourceBuckets(
            policy.requests_per_second, policy.request_burst, policy.sources_tracked, clock
        )
        self.calls = SourceCalls(live_calls, clock)
        self.digest = DigestCheck(policy.auth, wall_clock) if policy.auth is not None else None
        self.refusals = RefusalLog(log, policy.log_interval)

    def screen(self, request: SipRequest, host: str, *, new_dialog: bool) -> Refusal | None:
        """None to let ``request`` from ``host`` in (not a request of a call in
        progress: the endpoint lets those in itself); else the refusal.
        ``new_dialog``: an INVITE starting a call (no To tag)."""
        policy = self.policy
        method = request.method.upper()
        if not self.allow_list.allows(host):
            answer = policy.refuse == "403" and method != "ACK" and self.buckets.take(host)
            return self._refused(
                host,
                method,
                Refusal("not_allowed", 403 if answer else None, to_tag=method == "INVITE"),
            )
        if not self.buckets.take(host):
            return self._refused(host, method, self._over_limit("rate", method))
        if method == "ACK":
            return None  # the transaction layer absorbs it
        if method not in SERVED_METHODS:
            return self._refused(
                host, method, Refusal("method", 405, headers={"Allow": ALLOW_HEADER})
            )
        if not new_dialog:
            return None
        limit = policy.calls_per_source
        if limit and self.calls.at_limit(host, limit):
            return self._refused(host, method, self._over_limit("calls", method))
        if self.digest is not None:
            verdict = self.digest.verify(request, host)
            if verdict in ("missing", "stale"):
                challenge = self.digest.challenge(host, stale=verdict == "stale")
                return self._refused(
                    host,
                    method,
                    Refusal(
                        "auth_challenge",
                        401,
                        headers={"WWW-Authenticate": challenge},
                        to_tag=True,
                    ),
                    log=False,  # the usual first step of every authenticated call
                )
            if verdict == "bad":
                return self._refused(
                    host,
                    method,
                    Refusal("bad_credentials", 403, "Forbidden (bad credentials)", to_tag=True),
                )
        return None

    def _over_limit(self, reason: str, method: str) -> Refusal:
        if self.policy.over_limit == "silence" or method == "ACK":
            return Refusal(reason, None)
        return Refusal(reason, 503, headers={"Retry-After": "5"}, to_tag=method == "INVITE")

    def _refused(self, host: str, method: str, refusal: Refusal, *, log: bool = True) -> Refusal:
        if log:
            answer = "no answer" if refusal.status is None else str(refusal.status)
            self.refusals.note(host, refusal.reason, method, answer)
        return refusal

    def call_started(self, host: str, call_id: str) -> None:
        self.calls.started(host, call_id)

    def call_ended(self, call_id: str) -> None:
        self.calls.ended(call_id)

    def close(self) -> None:
        self.refusals.close()
