/*
 * oncevault access log: the browser verifies each row itself.
 *
 * 1. Fetch the public JWKS and the latest checkpoint; verify the checkpoint's Ed25519
 *    signature (waiting briefly while the newest rows are not yet covered).
 * 2. Compare with the checkpoint this browser verified last time (localStorage):
 *    an RFC 9162 consistency proof must connect the two signed roots.
 * 3. For each row: fetch its leaf bytes and inclusion proof, check that the leaf is
 *    canonical JSON equal to what the row shows, hash it, and walk the proof up to the
 *    signed root. Only then does the row say "verified"; otherwise "not verified".
 */
"use strict";
(function () {
  const V = self.OncevaultVerify;
  const table = document.getElementById("access-log");
  const status = document.getElementById("log-status");
  const cpText = document.getElementById("cp-status");
  const consText = document.getElementById("consistency-status");
  const rows = table ? Array.from(table.querySelectorAll("tbody tr[data-seq]")) : [];
  const STORE_KEY = "oncevault.checkpoint.v1 " + location.origin;
  const WAIT_MS = 15000;

  function l10n(element, name, values) {
    let text = (element && element.getAttribute("data-l10n-" + name)) || name;
    for (const [k, v] of Object.entries(values || {})) text = text.split("{" + k + "}").join(String(v));
    return text;
  }

  function mark(row, ok, reason) {
    const cell = row.querySelector("td.verify");
    const text = cell.querySelector(".verify-text");
    cell.setAttribute("data-state", ok ? "verified" : "failed");
    text.textContent = l10n(table, ok ? "verified" : "failed");
    if (!ok && reason) cell.setAttribute("title", reason);
  }

  async function getJson(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(url.split("?")[0] + " answered " + response.status);
    return response.json();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function signedCheckpoint(jwks, newestSeq) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const served = await getJson("/v1/audit/checkpoint");
      const checkpoint = await V.verifyCheckpoint(served.jws, jwks, location.origin);
      if (checkpoint.treeSize > newestSeq || Date.now() > deadline) return checkpoint;
      await sleep(400);
    }
  }

  function remembered() {
    try {
      const value = JSON.parse(localStorage.getItem(STORE_KEY));
      if (value && Number.isSafeInteger(value.tree_size) && /^[0-9a-f]{64}$/.test(value.root_hash)) {
        return { treeSize: value.tree_size, rootHash: V.hexToBytes(value.root_hash) };
      }
    } catch (e) {
      /* nothing usable stored */
    }
    return null;
  }

  function remember(checkpoint) {
    try {
      localStorage.setItem(
        STORE_KEY,
        JSON.stringify({ tree_size: checkpoint.treeSize, root_hash: checkpoint.rootHex, checked_at: Date.now() }),
      );
    } catch (e) {
      /* storage disabled: the next visit starts afresh */
    }
  }

  async function consistentWithLastVisit(checkpoint) {
    const old = remembered();
    if (old === null) {
      remember(checkpoint);
      consText.textContent = l10n(status, "cons-first");
      consText.setAttribute("data-state", "first");
      return true;
    }
    let ok;
    if (old.treeSize === checkpoint.treeSize) {
      ok = V.equalBytes(old.rootHash, checkpoint.rootHash);
    } else {
      const [a, b] = old.treeSize < checkpoint.treeSize ? [old, checkpoint] : [checkpoint, old];
      if (a.treeSize === 0) {
        ok = true;
      } else {
        const proof = await getJson("/my/api/audit/consistency?first=" + a.treeSize + "&second=" + b.treeSize);
        if (proof.first !== a.treeSize || proof.second !== b.treeSize) throw new Error("consistency proof for other sizes");
        const path = proof.consistency_path.map(V.hexToBytes);
        ok = await V.verifyConsistency(a.treeSize, b.treeSize, path, a.rootHash, b.rootHash);
      }
    }
    consText.setAttribute("data-state", ok ? "consistent" : "inconsistent");
    consText.setAttribute("data-old-size", String(old.treeSize));
    consText.textContent = l10n(status, ok ? "cons-ok" : "cons-bad", { old: old.treeSize });
    if (ok && checkpoint.treeSize >= old.treeSize) remember(checkpoint);
    return ok;
  }

  function expectedAttributes(entry) {
    const actor = entry.actor || {};
    return {
      seq: String(entry.seq),
      ts: String(entry.ts),
      action: entry.action,
      "actor-type": actor.type,
      "actor-id": actor.id === null ? "" : actor.id,
      "client-id": entry.client_id === null ? "" : entry.client_id,
      purpose: entry.purpose === null ? "" : entry.purpose,
      "record-type": entry.record_type === null ? "" : entry.record_type,
      outcome: entry.outcome,
      items: V.canonicalJson(entry.items),
    };
  }

  async function verifyRow(row, checkpoint) {
    const seq = Number(row.getAttribute("data-seq"));
    if (!Number.isSafeInteger(seq) || seq >= checkpoint.treeSize) throw new Error("not covered by the checkpoint yet");
    const proof = await getJson("/my/api/access-log/" + seq + "/proof?tree_size=" + checkpoint.treeSize);
    if (proof.seq !== seq || proof.tree_size !== checkpoint.treeSize) throw new Error("proof for another entry");
    // The leaf bytes must be the canonical encoding of exactly what this row shows.
    const leaf = V.b64ToBytes(proof.leaf);
    const text = V.asciiText(leaf);
    const entry = JSON.parse(text);
    if (V.canonicalJson(entry) !== text) throw new Error("leaf is not canonical JSON");
    if (entry.seq !== seq) throw new Error("leaf of another entry");
    for (const [name, value] of Object.entries(expectedAttributes(entry))) {
      if (row.getAttribute("data-" + name) !== value) throw new Error("row differs from the log: " + name);
    }
    // RFC 9162: leaf hash, then the inclusion path up to the signed root.
    const path = proof.inclusion_path.map(V.hexToBytes);
    const root = await V.rootFromInclusion(await V.leafHash(leaf), seq, checkpoint.treeSize, path);
    if (!V.equalBytes(root, checkpoint.rootHash)) throw new Error("inclusion proof does not reach the signed root");
  }

  async function main() {
    if (!status) return;
    cpText.textContent = l10n(status, "checking");
    const newest = rows.reduce((m, r) => Math.max(m, Number(r.getAttribute("data-seq"))), -1);
    let checkpoint;
    try {
      const jwks = await getJson("/.well-known/jwks.json");
      checkpoint = await signedCheckpoint(jwks, newest);
    } catch (e) {
      cpText.textContent = l10n(status, "cp-bad");
      cpText.setAttribute("data-state", "failed");
      rows.forEach((row) => mark(row, false, String(e && e.message)));
      return;
    }
    cpText.textContent = l10n(status, "cp-ok", { size: checkpoint.treeSize });
    cpText.setAttribute("data-state", "verified");
    let consistent;
    try {
      consistent = await consistentWithLastVisit(checkpoint);
    } catch (e) {
      consistent = false;
      consText.setAttribute("data-state", "inconsistent");
      consText.textContent = l10n(status, "cons-bad", { old: "?" });
    }
    for (const row of rows) {
      if (!consistent) {
        mark(row, false, "the log is not consistent with the last checkpoint this browser saw");
        continue;
      }
      try {
        await verifyRow(row, checkpoint);
        mark(row, true);
      } catch (e) {
        mark(row, false, String(e && e.message));
      }
    }
  }

  main().finally(() => {
    if (table) table.setAttribute("data-done", "true");
  });
})();
