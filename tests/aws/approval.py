"""A manual approval decided through put_approval_result with the token
get_pipeline_state shows, by another user than the one who started the
run (who may not approve it); a used token and a made-up one raise their
modeled exceptions.

argv: DECLARATION_FILE APPROVER_KEY_ID APPROVER_SECRET (the environment's
key is the starter's)."""
import json
import sys

import boto3
from botocore.config import Config

from common import action_state, client, done, error_code, execution_end, wait_for

starter = client()
approver = boto3.client("codepipeline", aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}))
declaration = json.load(open(sys.argv[1]))["pipeline"]
for stage in declaration["stages"]:
    for action in stage["actions"]:
        if "capabilities" in action:
            action.setdefault("configuration", {})["Sluice:Capabilities"] = json.dumps(action.pop("capabilities"))
declaration["roleArn"] = "arn:aws:iam::123456789012:role/sluice-pipeline"
name = declaration["name"]
result = {}

starter.create_pipeline(pipeline=declaration)
waiting = wait_for("the approval to wait", lambda: (
    lambda a: a if a.get("latestExecution", {}).get("token") else None
)(action_state(starter.get_pipeline_state(name=name), "Approve", "Release")))
token = waiting["latestExecution"]["token"]
result["token"] = token
result["waiting_status"] = waiting["latestExecution"]["status"]


def decide(cp, token, status="Approved"):
    return cp.put_approval_result(pipelineName=name, stageName="Approve", actionName="Release",
                                  result={"summary": "looks good", "status": status}, token=token)


result["made_up"] = error_code(lambda: decide(approver, "00000000-0000-4000-8000-000000000000"))
result["own_run"] = error_code(lambda: decide(starter, token))
approved = decide(approver, token)
result["approved_at_is_datetime"] = type(approved["approvedAt"]).__name__
execution_id = starter.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
result["end"] = execution_end(starter, name, execution_id)["status"]
result["used_again"] = error_code(lambda: decide(approver, token))
done(result)
