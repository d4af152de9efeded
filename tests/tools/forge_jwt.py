"""Forged JWTs for tests/jwt_attacks.rs, made with PyJWT and cryptography.

Usage: forge_jwt.py DIR SECRET

Writes the public keys olive is configured with to DIR (rs.pub.pem,
es.pub.pem) and prints one JSON object: "good" holds tokens olive must
accept (one per key, so the test can fail), "attacks" a list of
{"name", "token"} that olive must refuse. The claims are valid in every
token; only the header, signature or encoding is the attack.
"""

import base64
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

out_dir, secret = sys.argv[1], sys.argv[2]

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)

pem = serialization.Encoding.PEM
spki = serialization.PublicFormat.SubjectPublicKeyInfo
rsa_pub_pem = rsa_key.public_key().public_bytes(pem, spki)
ec_pub_pem = ec_key.public_key().public_bytes(pem, spki)
rsa_pub_der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, spki)
with open(f"{out_dir}/rs.pub.pem", "wb") as f:
    f.write(rsa_pub_pem)
with open(f"{out_dir}/es.pub.pem", "wb") as f:
    f.write(ec_pub_pem)

now = int(time.time())
claims = {
    "sub": "7",
    "name": "Ann",
    "aud": "olive",
    "iss": "django",
    "iat": now,
    "exp": now + 300,
    "grants": {"subscribe": ["olive.notes.#"]},
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def hmac_sign(signing_input: str, key: bytes) -> str:
    import hashlib
    import hmac

    return b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def raw_hs(header: dict, payload_segment: str, key: bytes) -> str:
    """HS256 over any header, any key bytes: what PyJWT refuses to do with
    a PEM key (its own defence against the confusion attack)."""
    signing_input = f"{segment(header)}.{payload_segment}"
    return f"{signing_input}.{hmac_sign(signing_input, key)}"


def rs(headers=None, payload=None, key=rsa_key) -> str:
    return jwt.encode(payload or claims, key, algorithm="RS256", headers={"kid": "rs", **(headers or {})})


def resign_rs(header: dict, payload_segment: str) -> str:
    """RS256 by the real key over a hand-made header and payload."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{segment(header)}.{payload_segment}"
    signature = rsa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


payload = segment(claims)
attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()).encode()

attacks = []
for alg in ["none", "None", "NONE", "nOnE"]:
    attacks.append({"name": f"alg {alg}", "token": f"{segment({'alg': alg, 'kid': 'rs', 'typ': 'JWT'})}.{payload}."})
    attacks.append({"name": f"alg {alg} with a signature", "token": f"{segment({'alg': alg, 'kid': 'rs'})}.{payload}.AAAA"})
for name, key in [
    ("RS->HS with the PEM public key", rsa_pub_pem),
    ("RS->HS with the PEM public key, no trailing newline", rsa_pub_pem.rstrip(b"\n")),
    ("RS->HS with the DER public key", rsa_pub_der),
    ("RS->HS with the JWK public key", rsa_jwk),
]:
    attacks.append({"name": name, "token": raw_hs({"alg": "HS256", "kid": "rs", "typ": "JWT"}, payload, key)})
for name, key in [
    ("ES->HS with the PEM public key", ec_pub_pem),
    ("ES->HS with the PEM public key, no trailing newline", ec_pub_pem.rstrip(b"\n")),
]:
    attacks.append({"name": name, "token": raw_hs({"alg": "HS256", "kid": "es", "typ": "JWT"}, payload, key)})
zero_sig = b64(bytes(64))
attacks.append({"name": "ECDSA r=s=0", "token": f"{segment({'alg': 'ES256', 'kid': 'es'})}.{payload}.{zero_sig}"})
attacks.append({"name": "ECDSA empty signature", "token": f"{segment({'alg': 'ES256', 'kid': 'es'})}.{payload}."})
# Keys the token brings along are never trusted.
attacks.append({"name": "jwk header with the attacker's key", "token": rs({"jwk": attacker_jwk}, key=attacker)})
attacks.append({"name": "jku header", "token": rs({"jku": "http://127.0.0.1:1/jwks.json"}, key=attacker)})
attacks.append({"name": "x5u header", "token": rs({"x5u": "http://127.0.0.1:1/cert.pem"}, key=attacker)})
attacks.append({"name": "x5c header", "token": rs({"x5c": ["MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBmF0dGFjazAeFw0="]}, key=attacker)})
# kid games.
for kid in ["../../../../../../dev/null", "rs\u0000", "rs/../rs", "' OR '1'='1", ""]:
    attacks.append({"name": f"kid {kid!r}", "token": raw_hs({"alg": "HS256", "kid": kid}, payload, secret.encode())})
# Header parameters that change what the signature means; olive does not
# implement them, so it must refuse them (RFC 7515 4.1.11, RFC 7797 3).
attacks.append({"name": "crit with an unknown name", "token": resign_rs({"alg": "RS256", "kid": "rs", "crit": ["exp-ext"], "exp-ext": 1}, payload)})
attacks.append({"name": "b64 false", "token": resign_rs({"alg": "RS256", "kid": "rs", "b64": False, "crit": ["b64"]}, payload)})
attacks.append({"name": "b64 false without crit", "token": resign_rs({"alg": "RS256", "kid": "rs", "b64": False}, payload)})
# Duplicated JSON keys: which one counts differs between parsers.
dup_payload = b64(
    ('{"sub":"7","sub":"1","aud":"olive","iss":"django","exp":%d,"grants":{"subscribe":["olive.notes.#"]}}' % (now + 300)).encode()
)
attacks.append({"name": "duplicated sub", "token": resign_rs({"alg": "RS256", "kid": "rs"}, dup_payload)})
dup_header = b64(b'{"alg":"RS256","kid":"rs","alg":"HS256"}')
attacks.append({"name": "duplicated alg", "token": f"{dup_header}.{payload}.{resign_rs({'alg': 'RS256', 'kid': 'rs'}, payload).split('.')[2]}"})
# exp in forms that are not a NumericDate olive can compare.
for name, exp in [("exp as a string", str(now + 300)), ("exp as a float", now + 300.5), ("exp huge", 10**30), ("exp negative", -1)]:
    attacks.append({"name": name, "token": rs(payload={**claims, "exp": exp})})
attacks.append({"name": "oversized", "token": rs(payload={**claims, "pad": "x" * 8000})})

good = {
    "rs": rs(),
    "es": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "es"}),
    "hs": jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "hs"}),
}
print(json.dumps({"good": good, "attacks": attacks}))
