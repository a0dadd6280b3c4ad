// What every console scenario shares: the cluster it runs against (from
// the environment tests/src/console.rs sets), a headless Debian Chromium
// that trusts the controller's certificate, signing in, the CLI, the
// screenshots, the accessibility check and the phone-width check.
//
// Run through `cargo test -p sluice-tests --test cross console::`; a file
// run on its own (`node --test`) without a cluster skips its tests.
import { chromium } from "playwright-core";
import axe from "axe-core";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate, createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { test } from "node:test";

export const env = process.env;
export const url = env.SLUICE_CONSOLE_URL;
/** Why a scenario cannot run here, or false: `test(name, { skip }, ...)`. */
export const skip = url ? false : "needs a cluster: run through cargo test -p sluice-tests --test cross console::";

/** The token of a user the Rust side made (`SLUICE_TOKEN_<NAME>`). */
export function token(name) {
  const value = env[`SLUICE_TOKEN_${name.toUpperCase()}`];
  assert.ok(value, `SLUICE_TOKEN_${name.toUpperCase()} is not set`);
  return value;
}

/** Waits `ms` milliseconds. */
export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/**
 * The base64 SHA-256 of the public key (SPKI) of the certificate the
 * console serves, after Node verified it chains to the cluster's CA:
 * Chromium trusts exactly that key (`--ignore-certificate-errors-spki-list`)
 * and no other invalid certificate.
 */
export async function pinnedKey() {
  const { hostname, port } = new URL(url);
  const ca = readFileSync(env.SLUICE_CA);
  const cert = await new Promise((resolve, reject) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca, servername: hostname.match(/^[\d.]+$/) ? undefined : hostname }, () => {
      const peer = socket.getPeerX509Certificate();
      socket.end();
      resolve(peer);
    });
    socket.on("error", reject);
  });
  assert.ok(cert instanceof X509Certificate, "the console served no certificate");
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

let launched = null;

/** A headless Chromium (Debian's) that trusts the console's certificate. */
export async function launch() {
  const args = [
    "--no-sandbox", // CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ];
  if (url.startsWith("https:")) args.push(`--ignore-certificate-errors-spki-list=${await pinnedKey()}`);
  launched = await chromium.launch({ executablePath: env.SLUICE_CHROMIUM || "/usr/bin/chromium", headless: true, args });
  return launched;
}

/**
 * A test of a scenario: on failure, every page still open is saved as a
 * screenshot (`failed-<test>-<n>.png`) before the failure is reported.
 */
export function scenario(name, body) {
  test(name, { skip }, async () => {
    try {
      await body();
    } catch (error) {
      let n = 0;
      for (const ctx of launched?.contexts() ?? []) {
        for (const page of ctx.pages()) {
          n += 1;
          const slug = name.replace(/[^A-Za-z0-9]+/g, "-").slice(0, 60);
          await screenshot(page, `failed-${slug}-${n}`).catch(() => {});
          console.log(`  (page ${n} was at ${page.url()})`);
        }
      }
      throw error;
    }
  });
}

/** A fresh browser context (its own cookies), optionally with options. */
export async function context(browser, options = {}) {
  const ctx = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 860 }, ...options });
  ctx.setDefaultTimeout(20_000);
  return ctx;
}

/**
 * Signs in with `tokenValue` through the sign-in form, as a person does;
 * returns the page, on the page the sign-in led to.
 */
export async function signIn(ctx, tokenValue, next = "/") {
  const page = await ctx.newPage();
  await page.goto(`/sign-in?next=${encodeURIComponent(next)}`);
  await page.getByLabel("API token").fill(tokenValue);
  await Promise.all([page.waitForURL((u) => u.pathname !== "/sign-in"), page.getByRole("button", { name: "Sign in" }).click()]);
  return page;
}

/** A new context signed in as `name`; its page. */
export async function signedIn(browser, name, next = "/", options = {}) {
  const ctx = await context(browser, options);
  return signIn(ctx, token(name), next);
}

/** Saves a full-page screenshot as `<name>.png`; its path (printed). */
export async function screenshot(page, name) {
  const dir = env.SLUICE_SCREENSHOTS || "screenshots";
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot saved: ${path}`);
  return path;
}

/**
 * Runs axe-core on the page: its serious and critical violations, each
 * named with the elements it found, and how many lesser ones there were.
 * (Evaluated through the DevTools protocol: the console's content
 * security policy forbids inline scripts, rightly.)
 */
export async function axeFindings(page) {
  await page.evaluate(axe.source);
  const result = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ["violations"], runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }),
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const serious = bad.map((v) => `${page.url()}: ${v.impact} ${v.id}: ${v.help}\n    ${v.nodes.slice(0, 5).map((n) => n.target.join(" ")).join("\n    ")}`);
  return { serious, lesser: result.violations.length - bad.length };
}

/** Why the page is wider than its viewport (it scrolls sideways), or null. */
export async function overflow(page) {
  const { scroll, client, culprits } = await page.evaluate(() => {
    const client = document.documentElement.clientWidth;
    // The deepest elements that reach past the right edge, or whose text
    // does (a long id that does not wrap): what to fix.
    const past = [...document.body.querySelectorAll("*")].filter(
      (el) => el.getBoundingClientRect().right > client + 1 || (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === "visible"),
    );
    const culprits = past.filter((el) => !past.some((other) => other !== el && el.contains(other)));
    const name = (el) => el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") + [...el.classList].map((c) => `.${c}`).join("");
    const path = (el) => [el.parentElement?.parentElement, el.parentElement, el].filter(Boolean).map(name).join(" > ");
    return { scroll: document.documentElement.scrollWidth, client, culprits: culprits.slice(0, 3).map(path) };
  });
  return scroll > client ? `${page.url()} is ${scroll} px wide in a ${client} px viewport (past the edge: ${culprits.join("; ")})` : null;
}

/**
 * Runs the `sluice` CLI against the cluster as `name` (default: the
 * admin); its stdout, or a failure with its output.
 */
export function sluice(args, name = "admin") {
  const out = spawnSync(env.SLUICE_BIN, args, { env: { ...env, SLUICE_TOKEN: token(name) }, encoding: "utf8" });
  assert.equal(out.status, 0, `sluice ${args.join(" ")} failed: ${out.stdout}${out.stderr}`);
  return out.stdout;
}

/** `sluice ARGS --output json`, parsed. */
export function sluiceJson(args, name = "admin") {
  return JSON.parse(sluice([...args, "--output", "json"], name));
}

/** Polls `probe` until it returns a truthy value; that value. */
export async function until(what, probe, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/**
 * Marks the document so a test can tell it was never reloaded: a
 * navigation drops the mark.
 */
export async function markDocument(page) {
  await page.evaluate(() => {
    window.__sluiceNotReloaded = true;
  });
}

export async function notReloaded(page) {
  assert.equal(await page.evaluate(() => window.__sluiceNotReloaded === true), true, "the page was reloaded");
}

/**
 * Opens the disclosure (`<details>`) whose summary is `text` in `scope`,
 * unless it is open already; the details element.
 */
export async function disclose(scope, text) {
  const page = typeof scope.page === "function" ? scope.page() : scope;
  const details = scope.locator("details").filter({ has: page.locator(`summary:text-is("${text}")`) }).first();
  if (!(await details.evaluate((d) => d.open))) await details.locator("summary").first().click();
  return details;
}
