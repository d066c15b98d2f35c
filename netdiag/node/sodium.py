"""A faster Ed25519 verifier for the sigpool's batches: libsodium, when the system has it.

On the project's hosts libsodium's ``crypto_sign_verify_detached`` checks a signature in
~52 µs against ~81 µs for ``crypto.verify`` (cryptography/OpenSSL, key object included), and
a joiner's header chain is bound by exactly these checks (docs/benchmarks.md, issue 13).

Why the rule stays ``crypto.verify``'s: the pool's verdicts are only used to let ``verify``
skip the triples the batch *accepted* (``crypto.preverified``); a triple the batch rejects is
checked again inline by ``verify``. So what matters is that libsodium accepts nothing that
OpenSSL rejects. Both check the same cofactorless equation R == [S]B - [SHA-512(R||A||M)]A and
compare the encoding of R byte for byte, both reject S >= L; libsodium (built without
ED25519_COMPAT, as Debian's is) additionally rejects non-canonical and small-order keys and a
small-order R — which OpenSSL accepts (an identity key with R = identity, S = 0 verifies any
message there), and which ``crypto.verify_raw`` therefore refuses before OpenSSL sees them.
Stricter, never looser: a triple it refuses only costs an inline check.
``fast_verifier`` checks that on load with known answers and falls back to ``crypto.verify``
when the library is missing or disagrees.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

from netdiag.node import crypto

Verifier = Callable[[bytes, bytes, bytes], bool]
IDENTITY = b"\x01" + bytes(31)  # the neutral point's encoding: a small-order key and R


def load_sodium() -> Verifier | None:
    name = ctypes.util.find_library("sodium") or "libsodium.so.23"
    try:
        lib = ctypes.CDLL(name)
        if lib.sodium_init() < 0:
            return None
        fn = lib.crypto_sign_ed25519_verify_detached
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
    fn.restype = ctypes.c_int

    def verify(pubkey: bytes, signature: bytes, data: bytes) -> bool:
        # lengths first: the library reads exactly 32 and 64 bytes from these pointers
        if len(pubkey) != crypto.PUBKEY_LEN or len(signature) != crypto.SIG_LEN:
            return False
        return bool(fn(signature, data, len(data), pubkey) == 0)

    return verify


def agrees(fast: Verifier) -> bool:
    """Known answers: a good signature verifies; a flipped bit, a foreign key, the wrong
    message and a small-order forgery (which bare OpenSSL accepts; ``crypto.verify_raw``
    refuses it) do not."""
    me = crypto.lab_identity("sodium-self-test", 0)
    other = crypto.lab_identity("sodium-self-test", 1)
    msg = b"netdiag sodium self-test"
    sig = me.sign(msg)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    return (
        fast(me.node_id, sig, msg)
        and not fast(me.node_id, flipped, msg)
        and not fast(other.node_id, sig, msg)
        and not fast(me.node_id, sig, msg + b"!")
        and not fast(IDENTITY, IDENTITY + bytes(32), msg)
        and crypto.verify_raw(me.node_id, sig, msg)
    )


@functools.cache
def fast_verifier() -> Verifier:
    """libsodium's verifier if present and it passes ``agrees``; else ``crypto.verify_raw``.
    Once per process (a sigpool worker's first batch)."""
    fast = load_sodium()
    return fast if fast is not None and agrees(fast) else crypto.verify_raw
