// An action's log followed while its action writes it, and an agent
// drained from the agents page.
//
// The cluster (tests/tests/cross/console.rs): an agent; `tail` (Source ->
// Build/Write, a shell action that prints a coloured line and a first
// line, waits for the file SLUICE_LOG_MARK, then prints more lines slowly);
// users `ann` (operator) and `vic` (viewer).
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as c from "./lib.mjs";

let browser;
before(async () => {
  if (!c.skip) browser = await c.launch();
});
after(async () => {
  await browser?.close();
});

c.scenario("a log is followed while it is written, colours rendered", async () => {
  const id = JSON.parse(c.sluice(["pipeline", "start", "tail", "--output", "json"], "ann")).pipelineExecutionId;
  await c.until("the Write action to run", () => {
    const e = c.sluiceJson(["execution", "get", "tail", id]);
    return e.stages[1]?.actions[0]?.status === "InProgress";
  });
  const page = await c.signedIn(browser, "ann", `/pipelines/tail/executions/${id}/actions/Build/Write`);
  await page.getByRole("heading", { level: 1, name: "Build / Write" }).waitFor();
  const log = page.getByRole("log", { name: "Log of Build / Write" });
  await log.getByText("first line", { exact: true }).waitFor();
  // The colour is a class, never an inline style (the CSP forbids those).
  const green = log.locator("span", { hasText: /^green start$/ }).last();
  assert.match(await green.getAttribute("class"), /ansi-fg-green/);
  assert.doesNotMatch(await log.innerHTML(), /\x1b/, "a raw escape reached the page");
  assert.equal((await green.textContent()).trim(), "green start");
  const follow = page.getByRole("button", { name: "Follow log" });
  assert.equal(await follow.getAttribute("aria-pressed"), "true");
  await c.markDocument(page);

  // The action goes on only now: every line after this one arrives live.
  writeFileSync(c.env.SLUICE_LOG_MARK, "go\n");
  await log.getByText("after the mark", { exact: true }).waitFor();
  await log.getByText("line 3 of 40", { exact: true }).waitFor();
  await c.screenshot(page, "log-following");
  await log.getByText("last line", { exact: true }).waitFor({ timeout: 60_000 });
  await c.notReloaded(page);
  // Following keeps the newest line in view.
  const last = log.locator(".line", { hasText: /^last line\s*$/ });
  await c.until("the last line to be scrolled into view", async () => {
    const box = await last.boundingBox();
    const pre = await log.boundingBox();
    return box && pre && box.y + box.height <= pre.y + pre.height + 2;
  }, 10_000);
  // Each line once, in order.
  const lines = (await log.locator(".line").allTextContents()).map((l) => l.trim()).filter((l) => /^line \d+ of 40$/.test(l));
  assert.deepEqual(lines, Array.from({ length: 40 }, (_, i) => `line ${i + 1} of 40`));
  await page.locator("#log-state", { hasText: "Finished" }).waitFor({ timeout: 60_000 });
  await c.screenshot(page, "log-finished");

  // Unpressed, the toggle stops following.
  if ((await follow.count()) > 0) {
    await follow.click();
    assert.equal(await follow.getAttribute("aria-pressed"), "false");
  }
  await page.context().close();
});

c.scenario("an agent is drained from the agents page, and the CLI agrees", async () => {
  const [agent] = c.sluiceJson(["agent", "list"]).agents;
  const page = await c.signedIn(browser, "ann", "/agents");
  await page.getByRole("heading", { level: 1, name: "Agents" }).waitFor();
  const row = page.getByRole("row").filter({ hasText: agent.id });
  await row.waitFor();
  await Promise.all([page.waitForURL("**/agents"), row.getByRole("button", { name: `Drain agent ${agent.id}` }).click()]);
  await page.getByRole("status").filter({ hasText: `Agent ${agent.id} is draining` }).waitFor();
  await page.getByRole("row").filter({ hasText: agent.id }).filter({ hasText: /draining/i }).waitFor();
  await c.screenshot(page, "agents-drained");
  await c.until("the CLI to say draining", () => c.sluiceJson(["agent", "list"]).agents.find((a) => a.id === agent.id).state === "draining");
  // And back to work.
  const again = page.getByRole("row").filter({ hasText: agent.id });
  await Promise.all([page.waitForURL("**/agents"), again.getByRole("button", { name: `Enable agent ${agent.id}` }).click()]);
  await c.until("the CLI to say enabled", () => c.sluiceJson(["agent", "list"]).agents.find((a) => a.id === agent.id).state !== "draining");
  await page.context().close();
});
