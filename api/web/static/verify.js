/*
 * oncevault: audit-log verification in the browser (no server trust).
 *
 * Pure functions, exported as window.OncevaultVerify:
 *  - verifyCheckpoint(jws, jwks, origin): the checkpoint's compact JWS (typ checkpoint+jwt,
 *    alg EdDSA, kid "cp-...") checked with WebCrypto Ed25519 against the platform JWKS;
 *    returns {treeSize, rootHash, origin, timestamp} from the signed payload only.
 *  - leafHash(bytes): RFC 9162 SHA-256(0x00 || leaf).
 *  - rootFromInclusion(leafHash, index, size, path): RFC 9162 section 2.1.3.2.
 *  - verifyConsistency(size1, size2, path, root1, root2): RFC 9162 section 2.1.4.2.
 *  - canonicalJson(value): sorted keys, no spaces, ASCII (the audit leaf encoding).
 * Tree sizes stay below 2^53, so arithmetic uses numbers (never 32-bit bit operators).
 */
"use strict";
(function (global) {
  const encoder = new TextEncoder();
  const asciiDecoder = new TextDecoder("ascii", { fatal: true });
  const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

  function fail(message) {
    throw new Error(message);
  }

  function hexToBytes(hex) {
    if (typeof hex !== "string" || !/^(?:[0-9a-f]{2})*$/.test(hex)) fail("bad hex");
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i += 1) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  function bytesToHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function b64ToBytes(text) {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) fail("bad base64");
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += 1) out[i] = raw.charCodeAt(i);
    return out;
  }

  function b64urlToBytes(text) {
    if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) fail("bad base64url");
    const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - (text.length % 4)) % 4);
    return b64ToBytes(padded);
  }

  function concat(...parts) {
    const size = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equalBytes(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i += 1) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  function leafHash(leaf) {
    return sha256(concat(Uint8Array.of(0), leaf));
  }

  function nodeHash(left, right) {
    return sha256(concat(Uint8Array.of(1), left, right));
  }

  function isSize(n) {
    return Number.isSafeInteger(n) && n >= 0;
  }

  function checkHash(h) {
    if (!(h instanceof Uint8Array) || h.length !== 32) fail("hash is not 32 bytes");
  }

  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  /* RFC 9162 section 2.1.3.2: the root an inclusion proof leads to. */
  async function rootFromInclusion(hash, index, size, path) {
    if (!isSize(index) || !isSize(size) || index >= size) fail("index outside the tree");
    checkHash(hash);
    let fn = index;
    let sn = size - 1;
    let r = hash;
    for (const p of path) {
      checkHash(p);
      if (sn === 0) fail("inclusion proof too long");
      if (odd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        if (!odd(fn)) {
          while (!odd(fn) && fn !== 0) {
            fn = half(fn);
            sn = half(sn);
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn);
      sn = half(sn);
    }
    if (sn !== 0) fail("inclusion proof too short");
    return r;
  }

  function isPowerOfTwo(n) {
    if (n < 1) return false;
    while (n > 1) {
      if (odd(n)) return false;
      n = half(n);
    }
    return true;
  }

  /* RFC 9162 section 2.1.4.2: true when root2's tree extends root1's tree. */
  async function verifyConsistency(size1, size2, path, root1, root2) {
    if (!isSize(size1) || !isSize(size2) || size1 > size2) fail("bad tree sizes");
    checkHash(root1);
    checkHash(root2);
    path.forEach(checkHash);
    if (size1 === size2) return path.length === 0 && equalBytes(root1, root2);
    if (size1 === 0) return path.length === 0;
    if (path.length === 0) return false;
    const c = isPowerOfTwo(size1) ? [root1, ...path] : path.slice();
    let fn = size1 - 1;
    let sn = size2 - 1;
    while (odd(fn)) {
      fn = half(fn);
      sn = half(sn);
    }
    let fr = c[0];
    let sr = c[0];
    for (const value of c.slice(1)) {
      if (sn === 0) return false;
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(value, fr);
        sr = await nodeHash(value, sr);
        if (!odd(fn)) {
          while (!odd(fn) && fn !== 0) {
            fn = half(fn);
            sn = half(sn);
          }
        }
      } else {
        sr = await nodeHash(sr, value);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 && equalBytes(fr, root1) && equalBytes(sr, root2);
  }

  /* JSON with sorted keys, no spaces, ASCII only: the leaf bytes of an audit entry. */
  function canonicalJson(value) {
    if (value === null) return "null";
    if (value === true) return "true";
    if (value === false) return "false";
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value)) fail("only safe integers appear in entries");
      return String(value);
    }
    if (typeof value === "string") {
      if (!/^[\x20-\x7e]*$/.test(value)) fail("non-ASCII string");
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
    if (typeof value === "object") {
      return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
    }
    fail("unexpected JSON value");
    return "";
  }

  function jsonPart(text) {
    const value = JSON.parse(utf8Decoder.decode(b64urlToBytes(text)));
    if (value === null || typeof value !== "object" || Array.isArray(value)) fail("JWS part is not an object");
    return value;
  }

  function originMatches(signed, origin) {
    const bare = signed.replace(/\/+$/, "");
    return bare === origin || bare.startsWith(origin + "/");
  }

  /* The checkpoint's JWS, checked with WebCrypto Ed25519 against a cp- key of the JWKS. */
  async function verifyCheckpoint(jws, jwks, origin) {
    if (typeof jws !== "string" || jws.length > 8192) fail("checkpoint is not a JWS");
    const parts = jws.split(".");
    if (parts.length !== 3) fail("checkpoint is not a compact JWS");
    const header = jsonPart(parts[0]);
    if (header.alg !== "EdDSA") fail("checkpoint alg is not EdDSA");
    if (header.typ !== "checkpoint+jwt") fail("not a checkpoint");
    if (typeof header.kid !== "string" || !header.kid.startsWith("cp-")) fail("not a checkpoint key");
    for (const name of ["jku", "x5u", "jwk", "x5c", "crit"]) {
      if (name in header) fail("unexpected JWS header " + name);
    }
    const keys = jwks && Array.isArray(jwks.keys) ? jwks.keys : [];
    const jwk = keys.find((k) => k && k.kid === header.kid);
    if (!jwk || jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
      fail("checkpoint key not in the JWKS");
    }
    const key = await crypto.subtle.importKey(
      "jwk",
      { kty: "OKP", crv: "Ed25519", x: jwk.x },
      { name: "Ed25519" },
      false,
      ["verify"],
    );
    const signed = encoder.encode(parts[0] + "." + parts[1]);
    const good = await crypto.subtle.verify({ name: "Ed25519" }, key, b64urlToBytes(parts[2]), signed);
    if (!good) fail("checkpoint signature does not verify");
    const payload = jsonPart(parts[1]);
    if (!isSize(payload.tree_size)) fail("checkpoint tree_size");
    if (typeof payload.root_hash !== "string" || !/^[0-9a-f]{64}$/.test(payload.root_hash)) fail("checkpoint root_hash");
    if (typeof payload.origin !== "string" || !originMatches(payload.origin, origin)) fail("checkpoint of another origin");
    return {
      treeSize: payload.tree_size,
      rootHash: hexToBytes(payload.root_hash),
      rootHex: payload.root_hash,
      origin: payload.origin,
      timestamp: payload.timestamp,
    };
  }

  function asciiText(bytes) {
    return asciiDecoder.decode(bytes);
  }

  global.OncevaultVerify = Object.freeze({
    asciiText,
    b64ToBytes,
    b64urlToBytes,
    bytesToHex,
    canonicalJson,
    equalBytes,
    hexToBytes,
    leafHash,
    nodeHash,
    rootFromInclusion,
    verifyCheckpoint,
    verifyConsistency,
  });
})(self);
