// Signing in and out, sessions that end, and requests from other sites.
// The cluster (tests/tests/cross/console.rs) has an admin, and `rita`, an
// operator whose token this scenario revokes.
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import * as c from "./lib.mjs";

let browser;
before(async () => {
  if (!c.skip) browser = await c.launch();
});
after(async () => {
  await browser?.close();
});

c.scenario("a bad token is refused and nothing opens without signing in", async () => {
  const ctx = await c.context(browser);
  const page = await ctx.newPage();
  // A page of the console sends a stranger to the sign-in page, and back after.
  await page.goto("/");
  assert.equal(new URL(page.url()).pathname, "/sign-in");
  await page.getByLabel("API token").fill("sluice_not-a-real-token");
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(answer.status(), 401);
  await page.getByRole("alert").filter({ hasText: "That token or access key is not valid." }).waitFor();
  assert.deepEqual(await ctx.cookies(), [], "a refused sign-in sets no cookie");
  await c.screenshot(page, "sign-in-refused");
  await ctx.close();
});

c.scenario("a token signs in with a strict, HttpOnly, Secure cookie; sign-out ends the session", async () => {
  const ctx = await c.context(browser);
  const page = await c.signIn(ctx, c.token("admin"), "/");
  await page.getByRole("heading", { level: 1, name: "Pipelines" }).waitFor();
  await page.getByRole("navigation", { name: "Sections" }).waitFor();
  const cookies = await ctx.cookies();
  assert.equal(cookies.length, 1, JSON.stringify(cookies));
  const [cookie] = cookies;
  assert.equal(cookie.name, "__Host-sluice-session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(cookie.path, "/");
  assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the session cookie");
  await c.screenshot(page, "signed-in");

  await Promise.all([page.waitForURL("**/sign-in"), page.getByRole("button", { name: "Sign out" }).click()]);
  assert.deepEqual(await ctx.cookies(), [], "sign-out removes the cookie");
  await page.goto("/");
  assert.equal(new URL(page.url()).pathname, "/sign-in");

  // The old cookie, replayed by someone who kept it, opens nothing.
  const replay = await c.context(browser);
  await replay.addCookies([cookie]);
  const again = await replay.newPage();
  await again.goto("/");
  assert.equal(new URL(again.url()).pathname, "/sign-in", "a signed-out session's cookie still worked");
  await replay.close();
  await ctx.close();
});

c.scenario("an access key's id and secret sign in too; a wrong secret does not", async () => {
  const ctx = await c.context(browser);
  const page = await ctx.newPage();
  await page.goto("/sign-in");
  await page.getByLabel("Access key ID").fill(c.env.SLUICE_ACCESS_KEY_ID);
  await page.getByLabel("Secret access key").fill(`${c.env.SLUICE_SECRET_ACCESS_KEY}x`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  assert.deepEqual(await ctx.cookies(), []);
  await page.getByLabel("Access key ID").fill(c.env.SLUICE_ACCESS_KEY_ID);
  await page.getByLabel("Secret access key").fill(c.env.SLUICE_SECRET_ACCESS_KEY);
  await Promise.all([page.waitForURL((u) => u.pathname === "/"), page.getByRole("button", { name: "Sign in" }).click()]);
  await page.getByRole("banner").getByText("ann", { exact: true }).waitFor();
  await ctx.close();
});

c.scenario("sign-in goes back to the page asked for, never to another site", async () => {
  const ctx = await c.context(browser);
  const page = await ctx.newPage();
  await page.goto("/?from=bookmark");
  assert.match(page.url(), /\/sign-in\?next=%2F%3Ffrom%3Dbookmark/);
  await page.getByLabel("API token").fill(c.token("admin"));
  await Promise.all([page.waitForURL("**/?from=bookmark"), page.getByRole("button", { name: "Sign in" }).click()]);
  await page.close();

  const evil = await ctx.newPage();
  await evil.goto("/sign-in?next=//evil.example/");
  await evil.getByLabel("API token").fill(c.token("admin"));
  await Promise.all([evil.waitForURL((u) => u.pathname !== "/sign-in"), evil.getByRole("button", { name: "Sign in" }).click()]);
  assert.equal(new URL(evil.url()).origin, new URL(c.url).origin);
  assert.equal(new URL(evil.url()).pathname, "/");
  await ctx.close();
});

c.scenario("revoking a token ends its open session at once", async () => {
  const page = await c.signedIn(browser, "rita");
  await page.getByRole("heading", { level: 1, name: "Pipelines" }).waitFor();
  const tokens = c.sluiceJson(["token", "list"]).tokens.filter((t) => t.user === "rita" && !t.revoked);
  assert.equal(tokens.length, 1, JSON.stringify(tokens));
  c.sluice(["token", "revoke", tokens[0].id]);
  await page.reload();
  assert.equal(new URL(page.url()).pathname, "/sign-in");
  await page.getByRole("alert").filter({ hasText: "revoked" }).waitFor();
  await c.screenshot(page, "sign-in-revoked");
  // The revoked token no longer signs in either.
  await page.getByLabel("API token").fill(c.token("rita"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  await page.context().close();
});

/**
 * A site of an attacker: http://localhost:PORT (another site than the
 * console's 127.0.0.1), whose page posts a form to the console the moment
 * it loads. `forms` maps a path to the form's action and fields.
 */
async function attacker(forms) {
  const server = createServer((req, res) => {
    const form = forms[new URL(req.url, "http://x").pathname];
    if (!form) {
      res.writeHead(404).end();
      return;
    }
    const inputs = Object.entries(form.fields)
      .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`)
      .join("");
    res.writeHead(200, { "content-type": "text/html" });
    res.end(
      `<!doctype html><title>Win a prize</title><form id="f" method="post" action="${form.action}">${inputs}</form>` +
        `<script>document.getElementById("f").submit()</script>`,
    );
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return { server, origin: `http://localhost:${server.address().port}` };
}

c.scenario("a form posted from another site is refused and changes nothing", async () => {
  const page = await c.signedIn(browser, "admin");
  const ctx = page.context();
  const target = c.env.SLUICE_FORGE_PATH || "/sign-out";
  const { server, origin } = await attacker({
    "/forge": { action: `${c.url}${target}`, fields: { csrf: "guessed", reason: "forged", comment: "forged" } },
    "/login": { action: `${c.url}/sign-in`, fields: { token: c.token("rita"), next: "/" } },
  });
  try {
    for (const [path, want] of [
      ["/forge", [401, 403]],
      ["/login", [403]],
    ]) {
      const evil = await ctx.newPage();
      const [answer] = await Promise.all([
        evil.waitForResponse((r) => r.url().startsWith(c.url) && r.request().method() === "POST"),
        evil.goto(`${origin}${path}`),
      ]);
      assert.ok(want.includes(answer.status()), `${path}: ${answer.status()} ${await answer.text()}`);
      assert.match(await answer.text(), /sign in first|refused/);
      await c.screenshot(evil, `forged-post${path.replace("/", "-")}`);
      await evil.close();
    }
    // A data: page (an opaque origin) is another site too.
    const data = await ctx.newPage();
    const html = `<form id="f" method="post" action="${c.url}${target}"><input name="csrf" value="x"></form><script>document.getElementById("f").submit()</script>`;
    const [answer] = await Promise.all([
      data.waitForResponse((r) => r.url().startsWith(c.url) && r.request().method() === "POST"),
      data.goto(`data:text/html,${encodeURIComponent(html)}`),
    ]);
    assert.ok([401, 403].includes(answer.status()), `data: page: ${answer.status()}`);
    await data.close();
  } finally {
    server.close();
  }
  // The victim is still signed in: the forged sign-out did nothing.
  await page.reload();
  assert.notEqual(new URL(page.url()).pathname, "/sign-in", "a forged post signed the victim out");
  // A script on the console's own origin without the session's CSRF token
  // (a stale page, an injected script) is refused too.
  const status = await page.evaluate(async (path) => {
    const r = await fetch(path, { method: "POST", body: new URLSearchParams({ csrf: "not-the-token", reason: "forged", comment: "forged" }) });
    return r.status;
  }, target);
  assert.equal(status, 403);
  await page.reload();
  assert.notEqual(new URL(page.url()).pathname, "/sign-in");
  if (c.env.SLUICE_FORGE_CHECK) {
    // The Rust side names a CLI command whose output must not show the forged change.
    const [args, absent] = JSON.parse(c.env.SLUICE_FORGE_CHECK);
    assert.doesNotMatch(c.sluice(args), new RegExp(absent));
  }
  await ctx.close();
});
