"""Helpers the AWS-API test scripts share: a boto3 client configured by
the environment the test harness sets (AWS_ENDPOINT_URL, the key, the
region), waiting, and printing the result the Rust test reads."""
import json
import sys
import time

import boto3
from botocore.config import Config


def client(service="codepipeline"):
    # No retries: a failed call fails the test at once.
    return boto3.client(service, config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def wait_for(what, probe, timeout=60.0):
    """Calls probe until it returns something truthy; fails after timeout."""
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.3)


def execution_end(cp, pipeline, execution_id, timeout=60.0):
    """The execution once it ended, read through get_pipeline_execution."""

    def ended():
        e = cp.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id)["pipelineExecution"]
        return e if e["status"] not in ("InProgress", "Stopping") else None

    return wait_for(f"execution {execution_id} to end", ended, timeout)


def action_state(state, stage, action):
    for s in state["stageStates"]:
        if s["stageName"] == stage:
            for a in s["actionStates"]:
                if a["actionName"] == action:
                    return a
    sys.exit(f"no action {stage}/{action} in {state}")


def error_code(call):
    """The modeled error code a call raises (None if it succeeds)."""
    try:
        call()
    except Exception as e:  # botocore's ClientError and the modeled exceptions
        response = getattr(e, "response", None)
        if response is None:
            raise
        return {"code": response["Error"]["Code"], "class": type(e).__name__, "status": response["ResponseMetadata"]["HTTPStatusCode"]}
    return None


def done(result):
    print(json.dumps(result, default=str))
