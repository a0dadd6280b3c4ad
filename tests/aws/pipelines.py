"""A pipeline's life through boto3: create (with tags, roleArn,
artifactStore and a Sluice field as a reserved configuration key), get,
update from what get returned, list with pagination, start with an
idempotency token, wait for Succeeded through get_pipeline_execution,
state, executions and action executions, a failure retried, a transition
disabled and enabled, a stop, tags, delete, and the modeled exception for
a missing pipeline.

argv: DECLARATION_FILE (a {"pipeline": ...} whose first execution fails
unless the variable FAIL is 0) COMMIT (the source repository's commit)."""
import json
import sys

from common import action_state, client, done, error_code, execution_end, wait_for

cp = client()
declaration = json.load(open(sys.argv[1]))["pipeline"]
name = declaration["name"]
declaration["roleArn"] = "arn:aws:iam::123456789012:role/sluice-pipeline"
declaration["artifactStore"] = {"type": "S3", "location": "artifacts-bucket"}
# The SDK refuses Sluice's own fields: spell them as reserved keys.
for stage in declaration["stages"]:
    for action in stage["actions"]:
        if "capabilities" in action:
            action.setdefault("configuration", {})["Sluice:Capabilities"] = json.dumps(action.pop("capabilities"))
result = {}

created = cp.create_pipeline(pipeline=declaration, tags=[{"key": "team", "value": "ci"}])
result["created_tags"] = created["tags"]
result["created_name"] = created["pipeline"]["name"]

got = cp.get_pipeline(name=name)
result["arn"] = got["metadata"]["pipelineArn"]
result["created_is_datetime"] = type(got["metadata"]["created"]).__name__
result["roleArn"] = got["pipeline"]["roleArn"]
result["artifactStore"] = got["pipeline"]["artifactStore"]
result["version"] = got["pipeline"]["version"]
build = got["pipeline"]["stages"][1]["actions"][0]
result["build_configuration"] = build["configuration"]
result["source_configuration"] = got["pipeline"]["stages"][0]["actions"][0]["configuration"]

# The creation's own execution: FAIL defaults to 1, so it fails in Build.
first = wait_for("the first execution", lambda: cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"])
first_id = first[-1]["pipelineExecutionId"]
failed = execution_end(cp, name, first_id)
result["first_status"] = failed["status"]

# Retry the failed stage with the variable fixed? Variables are the
# execution's: retry reruns it as it was, and fails again.
cp.retry_stage_execution(pipelineName=name, stageName="Build", pipelineExecutionId=first_id, retryMode="FAILED_ACTIONS")
result["retried_status"] = execution_end(cp, name, first_id)["status"]

# Update from what get returned (reserved keys and all): a new version.
got["pipeline"]["variables"][1]["defaultValue"] = "0"
updated = cp.update_pipeline(pipeline=got["pipeline"])
result["updated_version"] = updated["pipeline"]["version"]
result["updated_build_configuration"] = updated["pipeline"]["stages"][1]["actions"][0]["configuration"]

# Idempotent start: the same token, the same execution.
started = cp.start_pipeline_execution(name=name, clientRequestToken="release-42",
                                      variables=[{"name": "SLEEP", "value": "0"}])
again = cp.start_pipeline_execution(name=name, clientRequestToken="release-42")
result["idempotent"] = started["pipelineExecutionId"] == again["pipelineExecutionId"]
execution = execution_end(cp, name, started["pipelineExecutionId"])
result["second_status"] = execution["status"]
result["second_version"] = execution["pipelineVersion"]
result["second_variables"] = execution.get("variables")
result["second_trigger"] = execution["trigger"]["triggerType"]

# A start pinned to a source revision.
pinned = cp.start_pipeline_execution(name=name, sourceRevisions=[
    {"actionName": "Checkout", "revisionType": "COMMIT_ID", "revisionValue": sys.argv[2]}])["pipelineExecutionId"]
pinned_end = execution_end(cp, name, pinned)
result["pinned"] = [pinned_end["status"], [r["revisionId"] for r in pinned_end["artifactRevisions"]]]
summary = [s for s in cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
           if s["pipelineExecutionId"] == pinned][0]
result["pinned_summary"] = [r["revisionId"] for r in summary["sourceRevisions"]]

state = cp.get_pipeline_state(name=name)
result["state_version"] = state["pipelineVersion"]
result["state_build"] = action_state(state, "Build", "Run")["latestExecution"]["status"]
result["state_stage_status"] = [s.get("latestExecution", {}).get("status") for s in state["stageStates"]]
result["state_updated_is_datetime"] = type(state["updated"]).__name__

actions = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": started["pipelineExecutionId"]})
result["action_executions"] = sorted((d["stageName"], d["actionName"], d["status"]) for d in actions["actionExecutionDetails"])

# A transition held: the next run waits before Deploy until it is enabled.
cp.disable_stage_transition(pipelineName=name, stageName="Deploy", transitionType="Inbound", reason="release freeze")
held = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
state = wait_for("the run to wait before Deploy", lambda: (
    lambda s: s if any(st["stageName"] == "Build" and st.get("latestExecution", {}).get("pipelineExecutionId") == held
                       and st["latestExecution"]["status"] == "Succeeded" for st in s["stageStates"]) else None
)(cp.get_pipeline_state(name=name)))
deploy = [s for s in state["stageStates"] if s["stageName"] == "Deploy"][0]
result["transition_disabled"] = deploy["inboundTransitionState"]
result["held_status"] = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=held)["pipelineExecution"]["status"]
cp.enable_stage_transition(pipelineName=name, stageName="Deploy", transitionType="Inbound")
result["held_end"] = execution_end(cp, name, held)["status"]

# A rollback of Build to the run that succeeded in it: a new execution.
rolled = cp.rollback_stage(pipelineName=name, stageName="Build",
                           targetPipelineExecutionId=started["pipelineExecutionId"])["pipelineExecutionId"]
rolled_end = execution_end(cp, name, rolled)
result["rollback"] = [rolled_end["status"], rolled_end.get("executionType"),
                      rolled_end.get("rollbackMetadata", {}).get("rollbackTargetPipelineExecutionId")
                      == started["pipelineExecutionId"]]

# A stop: a slow run abandoned.
slow = cp.start_pipeline_execution(name=name, variables=[{"name": "SLEEP", "value": "30"}])["pipelineExecutionId"]
wait_for("the slow action to run", lambda: action_state(cp.get_pipeline_state(name=name), "Build", "Run")
         .get("latestExecution", {}).get("status") == "InProgress")
cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=slow, abandon=True, reason="not today")
result["stopped"] = execution_end(cp, name, slow)["status"]
result["stop_again"] = error_code(lambda: cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=slow))

# Executions through the paginator, two per page.
pages = list(cp.get_paginator("list_pipeline_executions").paginate(pipelineName=name, PaginationConfig={"PageSize": 2}))
result["execution_pages"] = [len(p["pipelineExecutionSummaries"]) for p in pages]

# Tags.
arn = result["arn"]
cp.tag_resource(resourceArn=arn, tags=[{"key": "env", "value": "prod"}, {"key": "team", "value": "platform"}])
cp.untag_resource(resourceArn=arn, tagKeys=["env"])
result["tags"] = cp.list_tags_for_resource(resourceArn=arn)["tags"]

# Pipelines through the paginator: three more, one per page.
for n in ("zz-a", "zz-b", "zz-c"):
    other = json.loads(json.dumps(declaration))
    other["name"] = n
    cp.create_pipeline(pipeline=other)
pages = list(cp.get_paginator("list_pipelines").paginate(PaginationConfig={"PageSize": 1}))
result["pipeline_pages"] = [[p["name"] for p in page["pipelines"]] for page in pages]
result["bad_token"] = error_code(lambda: cp.list_pipelines(nextToken="not-a-token"))

# Sluice deletes a pipeline once nothing of it runs.
wait_for("zz-a's first run to end", lambda: all(
    e["status"] not in ("InProgress", "Stopping")
    for e in cp.list_pipeline_executions(pipelineName="zz-a")["pipelineExecutionSummaries"]))
cp.delete_pipeline(name="zz-a")
result["delete_again"] = error_code(lambda: cp.delete_pipeline(name="zz-a"))
result["missing"] = error_code(lambda: cp.get_pipeline(name="zz-a"))
result["missing_state"] = error_code(lambda: cp.get_pipeline_state(name="zz-a"))
result["missing_execution"] = error_code(
    lambda: cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId="00000000-0000-0000-0000-000000000000"))
result["unsupported"] = error_code(lambda: cp.list_rule_types())
result["outbound"] = error_code(lambda: cp.disable_stage_transition(
    pipelineName=name, stageName="Deploy", transitionType="Outbound", reason="x"))
done(result)
