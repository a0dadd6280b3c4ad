"""Two jobs of one custom action type, told apart by their queryable
property: the worker fails the one of project "fails" with a message, and
takes the one of project "sleeps" without ever acknowledging it. Between
them it tries the first job's credentials on the second job's input.
Prints the job ids and the error codes it met, as one JSON line.

usage: worker_fail_and_timeout.py CATEGORY PROVIDER VERSION
"""
import http.client
import json
import os
import re
import sys
import time
import urllib.parse

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from common import code_of, connection as open_connection

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

endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
job_credentials = Credentials(credentials["accessKeyId"], credentials["secretAccessKey"], credentials["sessionToken"])


def raw_put(path, headers, body=None, announced=None):
    """A PUT sent by hand: `announced` is a Content-Length whose body is
    never sent (the answer must come from the headers alone). Returns
    [status, S3 error code]."""
    connection = open_connection(os.environ["AWS_ENDPOINT_URL"])
    connection.putrequest("PUT", path, skip_accept_encoding=True)
    for name, value in headers.items():
        if name.lower() != "content-length":
            connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body) if announced is None else announced))
    connection.endheaders(body if announced is None else None)
    answer = connection.getresponse()
    code = re.search(rb"<Code>(\w+)</Code>", answer.read()).group(1).decode()
    connection.close()
    return [answer.status, code]


def signed_put(path, body):
    """The headers boto3's signer gives a PUT of `body` with the job's key."""
    request = AWSRequest("PUT", os.environ["AWS_ENDPOINT_URL"] + path, data=body)
    S3SigV4Auth(job_credentials, "s3", os.environ["AWS_DEFAULT_REGION"]).add_auth(request)
    return dict(request.headers.items())


# The signature is checked before a body is read: a huge upload with an
# unknown key is refused at once, without sending a byte of it.
mine = fails["data"]["inputArtifacts"][0]["location"]["s3Location"]
path = f"/{mine['bucketName']}/{mine['objectKey']}"
now = time.gmtime()
forged = {
    "x-amz-date": time.strftime("%Y%m%dT%H%M%SZ", now),
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
    "Authorization": f"AWS4-HMAC-SHA256 Credential=ASIAFORGEDFORGEDFORG/{time.strftime('%Y%m%d', now)}/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64,
}
codes["hugeUnsignedPut"] = raw_put(path, forged, announced=600 << 20)

# What a key may do is known from the headers: a correctly signed write of
# a huge body to the job's input is refused at once, no byte of it read.
codes["hugePutToInput"] = raw_put(path, signed_put(path, b""), announced=100 << 20)

# A body changed after signing is refused, whatever the signature says (on
# the job's output: its input is refused before any body is read).
output = fails["data"]["outputArtifacts"][0]["location"]["s3Location"]
path = f"/{output['bucketName']}/{output['objectKey']}"
codes["tamperedPut"] = raw_put(path, signed_put(path, b"PK-what-was-signed"), body=b"PK-what-was-sent!!")

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
