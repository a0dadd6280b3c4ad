"""Two jobs of one custom action type, told apart by their queryable
property: the worker fails the one of project "fails" with a message, and
takes the one of project "sleeps" without ever acknowledging it. Between
them it tries the first job's credentials on the second job's input.
Prints the job ids and the error codes it met, as one JSON line.

usage: worker_fail_and_timeout.py CATEGORY PROVIDER VERSION
"""
import json
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

category, provider, version = sys.argv[1:4]
ACTION_TYPE = {"category": category, "owner": "Custom", "provider": provider, "version": version}
codepipeline = boto3.client("codepipeline")


def poll(project):
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = codepipeline.poll_for_jobs(actionTypeId=ACTION_TYPE, queryParam={"ProjectName": project})["jobs"]
        if jobs:
            return jobs[0]
        time.sleep(0.3)
    raise SystemExit(f"no job of {project} within 60 s")


def code_of(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"


fails = poll("fails")
sleeps = poll("sleeps")
codepipeline.acknowledge_job(jobId=fails["id"], nonce=fails["nonce"])
credentials = fails["data"]["artifactCredentials"]
s3 = boto3.client(
    "s3",
    aws_access_key_id=credentials["accessKeyId"],
    aws_secret_access_key=credentials["secretAccessKey"],
    aws_session_token=credentials["sessionToken"],
    config=Config(s3={"addressing_style": "path"}),
)
other = sleeps["data"]["inputArtifacts"][0]["location"]["s3Location"]
codes = {"othersInput": code_of(lambda: s3.get_object(Bucket=other["bucketName"], Key=other["objectKey"]))}
codes["noQuery"] = code_of(lambda: codepipeline.poll_for_jobs(actionTypeId=ACTION_TYPE))
codes["unknownType"] = code_of(
    lambda: codepipeline.poll_for_jobs(actionTypeId={**ACTION_TYPE, "provider": "Nobody"}, queryParam={"ProjectName": "x"})
)
codepipeline.put_job_failure_result(
    jobId=fails["id"], failureDetails={"type": "JobFailed", "message": "unit tests failed: 3 of 40"}
)
codes["failAgain"] = code_of(
    lambda: codepipeline.put_job_failure_result(jobId=fails["id"], failureDetails={"type": "JobFailed", "message": "again"})
)
print(json.dumps({"fails": fails["id"], "sleeps": sleeps["id"], "codes": codes}))
