"""Checks a raw ed25519 chain-of-trust signature with scriptworker's own functions.

Usage: scriptworker_ed25519.py PUBLIC_KEY_BASE64 DOCUMENT SIGNATURE

Exit 0: scriptworker accepts the signature; 1: scriptworker refuses it (its own
ScriptWorkerEd25519Error); 2: scriptworker is not installed in this Python.
"""
import sys

try:
    from scriptworker.ed25519 import (
        ed25519_public_key_from_string,
        verify_ed25519_signature,
    )
    from scriptworker.exceptions import ScriptWorkerEd25519Error
except ImportError as exc:
    print(f"scriptworker is not installed: {exc}", file=sys.stderr)
    sys.exit(2)

public_key = ed25519_public_key_from_string(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    contents = f.read()
with open(sys.argv[3], "rb") as f:
    signature = f.read()
try:
    verify_ed25519_signature(public_key, contents, signature, "refused: %(exc)s")
except ScriptWorkerEd25519Error as exc:
    print(exc)
    sys.exit(1)
print("verified")
