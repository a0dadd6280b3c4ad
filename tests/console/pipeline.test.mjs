// A pipeline page as people use it: a run watched to Succeeded without
// reloading, a transition disabled with a reason holding the next
// execution, and an approval that needs two people.
//
// The cluster (tests/tests/cross/console.rs): an agent; `web` (Source ->
// Build, a shell action of a few seconds -> Deploy) whose first execution
// ended; `gate` (Source -> Approve, RequiredApprovals 2 -> Ship), made by
// the admin, whose first execution waits at its approval; users `ann`
// (operator) and `abe` (approver).
import { after, before } from "node:test";
import assert from "node:assert/strict";
import * as c from "./lib.mjs";

let browser;
before(async () => {
  if (!c.skip) browser = await c.launch();
});
after(async () => {
  await browser?.close();
});

/** The `<dd>` of a fact (`<dt>name</dt>`) in `scope`. */
const fact = (scope, name) => scope.locator("dt", { hasText: new RegExp(`^\\s*${name}\\s*$`) }).locator("xpath=following-sibling::dd[1]");

/** A stage's region on the pipeline page, by its name. */
const stage = (page, name) => page.getByRole("region", { name, exact: true });

/**
 * Waits until the stage's region says `status` for execution `id` (its
 * link) when given (a live refresh may replace the region meanwhile).
 */
const stageIs = (page, name, status, id, timeout = 60_000) =>
  page
    .locator(`#stages section[data-stage="${name}"][data-status="${status}"]${id ? `:has(.stage-status a[href$="/executions/${id}"])` : ""}`)
    .first()
    .waitFor({ timeout });

/** The latest execution's id, as the summary links it. */
async function latestId(page) {
  const link = fact(page.locator("#summary"), "Execution").getByRole("link");
  return (await link.textContent()).trim();
}

c.scenario("a run started from the page is watched to Succeeded without reloading", async () => {
  const page = await c.signedIn(browser, "ann", "/pipelines/web");
  await page.getByRole("heading", { level: 1, name: "web" }).waitFor();
  const before = await latestId(page);

  // Start with a variable, through the form.
  await c.disclose(page, "Start execution…");
  await page.getByLabel("GREETING").fill("from the browser");
  await Promise.all([page.waitForURL("**/pipelines/web"), page.getByRole("button", { name: "Start execution" }).click()]);
  await page.getByRole("status").filter({ hasText: "Started execution" }).waitFor();
  const started = await c.until("the new execution on the page", async () => {
    const id = await latestId(page);
    return id !== before && id;
  });

  // From here on, nothing reloads the page: the event stream drives it.
  await c.markDocument(page);
  // A keyboard user's place survives the refreshes, which replace the
  // whole list of stages each time: the control focused now is focused
  // again in the new list.
  await stage(page, "Deploy").locator("summary", { hasText: "Disable transition…" }).focus();
  await stageIs(page, "Build", "InProgress", started);
  await c.screenshot(page, "pipeline-running");
  await stageIs(page, "Build", "Succeeded", started);
  await stageIs(page, "Deploy", "Succeeded", started);
  await fact(page.locator("#summary"), "Status").filter({ hasText: "Succeeded" }).waitFor();
  await c.notReloaded(page);
  const focused = await page.evaluate(() => {
    const el = document.activeElement;
    return { tag: el.tagName.toLowerCase(), text: el.textContent.trim(), stage: el.closest("section[data-stage]")?.dataset.stage };
  });
  assert.deepEqual(focused, { tag: "summary", text: "Disable transition…", stage: "Deploy" }, "the focus after the refreshes");
  assert.equal(await latestId(page), started);
  const build = stage(page, "Build").locator('article[data-action="Compile"]');
  assert.equal(await build.getAttribute("data-status"), "Succeeded");
  await fact(build, "Agent").filter({ hasText: /\S/ }).waitFor();
  await build.getByRole("link", { name: "Logs of Compile" }).waitFor();
  await c.screenshot(page, "pipeline-succeeded");

  // The CLI agrees, and the variable was the one typed.
  const execution = c.sluiceJson(["execution", "get", "web", started]);
  assert.equal(execution.pipelineExecution.status, "Succeeded");
  const greeting = execution.pipelineExecution.variables.find((v) => v.name === "GREETING");
  assert.equal(greeting.resolvedValue, "from the browser");
  await page.context().close();
});

c.scenario("a transition disabled with a reason holds the next execution until enabled", async () => {
  const page = await c.signedIn(browser, "ann", "/pipelines/web");
  const deploy = stage(page, "Deploy");
  await c.disclose(deploy, "Disable transition…");
  await deploy.getByLabel("Reason").fill("release freeze until the audit ends");
  await Promise.all([page.waitForURL("**/pipelines/web"), deploy.getByRole("button", { name: "Disable transition" }).click()]);
  const held = stage(page, "Deploy").locator('[data-transition="disabled"]');
  await held.waitFor();
  const text = await held.textContent();
  assert.match(text, /release freeze until the audit ends/);
  assert.match(text, /ann/);

  // An execution started elsewhere (the CLI) stops in front of Deploy, live.
  await c.markDocument(page);
  const id = JSON.parse(c.sluice(["pipeline", "start", "web", "--output", "json"])).pipelineExecutionId;
  await c.until("the execution to show", async () => (await latestId(page)) === id);
  await stageIs(page, "Build", "Succeeded", id);
  // Held: Build done, the execution still in progress, Deploy not entered,
  // and the page says which execution waits in front of it.
  await stage(page, "Deploy").locator("p.held-execution", { hasText: `Execution ${id} waits here.` }).waitFor();
  await fact(page.locator("#summary"), "Status").filter({ hasText: "InProgress" }).waitFor();
  const state = c.sluiceJson(["execution", "get", "web", id]);
  assert.equal(state.pipelineExecution.status, "InProgress");
  assert.equal(state.stages[1].status, "Succeeded", JSON.stringify(state.stages[1]));
  const entered = state.stages[2];
  assert.ok(!entered || !["InProgress", "Succeeded", "Failed"].includes(entered.status), `Deploy was entered: ${JSON.stringify(entered)}`);
  await c.notReloaded(page);
  await c.screenshot(page, "pipeline-transition-disabled");

  // Enabling it lets the held execution through.
  await Promise.all([page.waitForURL("**/pipelines/web"), stage(page, "Deploy").getByRole("button", { name: "Enable transition" }).click()]);
  await c.markDocument(page);
  await stageIs(page, "Deploy", "Succeeded", id);
  await fact(page.locator("#summary"), "Status").filter({ hasText: "Succeeded" }).waitFor();
  assert.equal(await latestId(page), id);
  await c.notReloaded(page);
  await page.context().close();
});

c.scenario("an approval needing two stays waiting after the first and passes with the second", async () => {
  const ann = await c.signedIn(browser, "ann", "/pipelines/gate");
  const gateId = await latestId(ann);
  const approve = stage(ann, "Approve");
  await approve.locator("p.approval-needs").filter({ hasText: "(0 of 2)" }).waitFor();
  await c.disclose(approve, "Approve or reject…");
  await approve.getByLabel("Comment").fill("looks good to me");
  await Promise.all([ann.waitForURL("**/pipelines/gate"), approve.getByRole("button", { name: "Approve", exact: true }).click()]);
  await ann.getByRole("status").filter({ hasText: "Approved" }).waitFor();

  // Still waiting, for one more person.
  const gate = stage(ann, "Approve");
  await gate.locator("p.approval-needs").filter({ hasText: "(1 of 2)" }).waitFor();
  assert.match(await gate.textContent(), /ann approved: looks good to me/);
  assert.equal(await gate.getAttribute("data-status"), "InProgress");
  await c.screenshot(ann, "approval-one-of-two");
  // Ann cannot count twice (whether or not the page still offers her the form).
  if ((await gate.getByText("Approve or reject…").count()) > 0) {
    await c.disclose(gate, "Approve or reject…");
    await gate.getByLabel("Comment").fill("again");
    const [twice] = await Promise.all([
      ann.waitForResponse((r) => r.request().method() === "POST"),
      gate.getByRole("button", { name: "Approve", exact: true }).click(),
    ]);
    assert.ok(twice.status() >= 400, `a second approval by ann answered ${twice.status()}`);
    await ann.goto("/pipelines/gate");
  }
  await gate.locator("p.approval-needs").filter({ hasText: "(1 of 2)" }).waitFor();
  await c.markDocument(ann);

  // The second approver, in a browser of their own.
  const abe = await c.signedIn(browser, "abe", "/pipelines/gate");
  const theirs = stage(abe, "Approve");
  await c.disclose(theirs, "Approve or reject…");
  await theirs.getByLabel("Comment").fill("ship it");
  await Promise.all([abe.waitForURL("**/pipelines/gate"), theirs.getByRole("button", { name: "Approve", exact: true }).click()]);
  await stageIs(abe, "Ship", "Succeeded", gateId);

  // Ann's page saw it happen, live.
  await stageIs(ann, "Approve", "Succeeded", gateId);
  await stageIs(ann, "Ship", "Succeeded", gateId);
  await c.notReloaded(ann);
  await c.screenshot(ann, "approval-passed");
  await ann.context().close();
  await abe.context().close();
});
