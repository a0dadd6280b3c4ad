// A viewer reads everything and is offered nothing to press; a change
// posted anyway is refused by the same permission check as the CLI's.
//
// The cluster: as for pipeline.test.mjs, and `vic`, a viewer.
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

/** The names of the page's buttons and of its disclosure widgets. */
async function controls(page) {
  const buttons = await page.getByRole("button").allTextContents();
  const summaries = await page.locator("main summary").allTextContents();
  return [...buttons, ...summaries].map((t) => t.trim());
}

c.scenario("a viewer sees every page and no button but Sign out", async () => {
  const page = await c.signedIn(browser, "vic", "/");
  for (const path of (c.env.SLUICE_VIEWER_PAGES || "/,/pipelines/web,/pipelines/gate").split(",")) {
    const answer = await page.goto(path);
    assert.equal(answer.status(), 200, `${path}: ${answer.status()}`);
    await page.getByRole("heading", { level: 1 }).waitFor();
    assert.deepEqual(await controls(page), ["Sign out"], `${path} offers a viewer controls`);
    assert.equal(await page.locator("main form[method=post]").count(), 0, `${path} has a form that posts`);
  }
  await page.goto("/pipelines/gate");
  await c.screenshot(page, "viewer-gate");
  await page.context().close();
});

c.scenario("a change a viewer posts with their own session and CSRF token is refused", async () => {
  const page = await c.signedIn(browser, "vic", "/pipelines/web");
  const before = c.sluiceJson(["pipeline", "history", "web"]).pipelineExecutionSummaries.length;
  // The form a viewer is not shown, posted by hand: a real session, a real token.
  const csrf = await page.locator("input[name=csrf]").first().inputValue();
  const answers = await page.evaluate(async (csrf) => {
    const post = async (path, fields) => {
      const r = await fetch(path, { method: "POST", body: new URLSearchParams({ csrf, ...fields }) });
      return [path, r.status, await r.text()];
    };
    return [
      await post("/pipelines/web/start", {}),
      await post("/pipelines/web/stages/Deploy/transition/disable", { reason: "viewer" }),
      await post("/pipelines/gate/stages/Approve/actions/Release/approval", { decision: "Approved", comment: "viewer" }),
    ];
  }, csrf);
  for (const [path, status, body] of answers) {
    assert.equal(status, 403, `${path}: ${status} ${body.slice(0, 300)}`);
    assert.match(body, /may not/, path);
  }
  assert.equal(c.sluiceJson(["pipeline", "history", "web"]).pipelineExecutionSummaries.length, before, "a viewer started an execution");
  const state = c.sluiceJson(["pipeline", "state", "web"]);
  const deploy = state.stageStates.find((s) => s.stageName === "Deploy");
  assert.equal(deploy.inboundTransitionState.enabled, true, "a viewer disabled a transition");
  await page.context().close();
});
